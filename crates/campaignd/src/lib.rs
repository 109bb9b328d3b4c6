//! `campaignd`: the program. CLI parsing, config, wiring of the crates, and the demo. No
//! business rules live here.
//!
//! It is a library with one entry point, [`main`], so that a binary is a one-line
//! `src/main.rs`: the test package (`tests/`) builds the same program as a binary target of
//! its own (`campaignd-under-test`), which is how its tests get a path Cargo built for them
//! (`CARGO_BIN_EXE_*` exists only for the binaries of a test's own package).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

// glibc malloc took ~12% of the dispatcher's CPU (perf over crates/bench): every message
// allocates its URL, text and row values, from many tokio and database threads. Declared here,
// not in a main.rs, so every binary built from this library (the tests' one included) is the
// same program.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod demo;
pub mod import;
mod out;
pub mod records;
mod sim;

use config::Config;
use demo::insert_base;

#[derive(Parser)]
#[command(
    name = "campaignd",
    version,
    about = "Runs telecom marketing and retention campaigns from workflow files."
)]
struct Cli {
    /// Config file (TOML). Without it, embedded defaults: SQLite file, SMS outbox file.
    #[arg(long, global = true, env = "CAMPAIGND_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://... (overrides the config file).
    #[arg(long, global = true, env = "CAMPAIGND_DATABASE_URL")]
    database_url: Option<String>,
    /// Log filter, e.g. `info` or `engine=debug`.
    #[arg(long, global = true, env = "CAMPAIGND_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check workflow files; print one line per valid file and every error with file:line:column.
    Validate {
        /// A workflow file or a folder of them.
        #[arg(default_value = "workflows")]
        path: PathBuf,
    },
    /// Print the JSON Schema of the workflow file format; with --attributes, the subscriber
    /// attributes filters, templates and imports may name (the workflows folder's catalogue).
    Schema {
        #[arg(long)]
        attributes: bool,
        /// The workflows folder whose `attributes.yaml` is shown (default: the config's).
        #[arg(long)]
        workflows: Option<PathBuf>,
    },
    /// Create or upgrade the database schema, and add a column (and index) for every
    /// attribute `attributes.yaml` declares that the database does not have yet.
    Migrate,
    /// Load subscribers from a CSV export through a column mapping file (all rows or none).
    Import {
        csv: PathBuf,
        /// Mapping file, e.g. workflows/imports/telco-ibm.mapping.yaml.
        #[arg(long)]
        mapping: PathBuf,
        /// Update subscribers already in the base (same msisdn) instead of refusing the file.
        /// Consent is never cleared by an import: opt-outs and do-not-disturb in the file are
        /// added, never taken away (see `campaignd consent`).
        #[arg(long)]
        update: bool,
    },
    /// Load usage history (the catalogue's `history:` measures) of subscribers in the base
    /// from CSV: a subscriber column (msisdn or external_id), `period` and measures, named
    /// as the fields or through --mapping. All rows or none; rows of unknown subscribers are
    /// counted and left out.
    ImportHistory {
        csv: PathBuf,
        #[arg(long)]
        mapping: Option<PathBuf>,
    },
    /// Load events (orders, top-ups, complaints, ...) of subscribers in the base from CSV:
    /// subscriber, `type`, `time` (RFC 3339), optional `value` and `detail`. All rows or none.
    ImportEvents {
        csv: PathBuf,
        #[arg(long)]
        mapping: Option<PathBuf>,
    },
    /// Apply retention: delete history older than the catalogue's `keep_months`/`keep_days`
    /// periods (counted back from the newest loaded) and events older than `events: keep_days`.
    Prune,
    /// Show or change a subscriber's consent. Clearing an opt-out or a do-not-disturb is only
    /// possible here, recorded with the config's `operator` and a reason.
    #[command(subcommand)]
    Consent(ConsentCmd),
    /// Add a synthetic subscriber base (plausible distributions) to the database.
    GenerateBase {
        #[arg(long, default_value_t = 100_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Months of usage history (and a year of events) per subscriber; 0 for none.
        #[arg(long, default_value_t = 12)]
        history_months: u32,
    },
    /// Show how a campaign's first wave would narrow the base, without writing anything.
    Plan { campaign: String },
    /// Start a run of a campaign now (the daemon carries it out). The version must be approved.
    Trigger { campaign: String },
    /// List the stored versions of a campaign: who loaded and who approved each.
    Versions { campaign: String },
    /// List a campaign's control holdout: how many subscribers each holdout period keeps in
    /// control (`control.hold`), and when they were drawn.
    Holdout {
        campaign: String,
        /// Only this period, e.g. `2026`, `season-2026`, `90d-2026-01-05` or `run-42`.
        #[arg(long)]
        period: Option<String>,
    },
    /// Evaluate a monitor (`workflows/monitors/ID.yaml`) now, as its schedule would: alert
    /// episodes opened, escalated and closed, and owners' digests queued (the daemon's mail
    /// loop sends them). Then list its open alerts (numbers masked).
    Monitor {
        id: String,
        /// How many open alerts to list.
        #[arg(long, default_value_t = 20)]
        list: u64,
    },
    /// Approve a version of a campaign (four eyes: not as the principal who loaded it).
    /// Without VERSION: the version in the workflows folder now (stored first, loaded by the
    /// config's `operator`), so it can be approved before the daemon's first slot.
    Approve {
        campaign: String,
        version: Option<i64>,
        /// The approver's API token (role approver or admin).
        #[arg(long, env = "CAMPAIGND_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Create, revoke and list API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Print the audit log.
    Audit {
        /// Only entries at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
    },
    /// Show what changed between two stored versions of a campaign.
    Diff {
        campaign: String,
        from: i64,
        to: i64,
    },
    /// Tell one subscriber's story: each wave that considered them, whether it left them out
    /// (and by which rule), held them out as control, or contacted them, when, how it went
    /// and how they responded; then their consent history.
    Why {
        msisdn: String,
        /// Only this campaign's runs.
        campaign: Option<String>,
    },
    /// Print a finished run's evaluation, or with --by-season a campaign's finished runs
    /// rolled up per season.
    Report {
        /// A run id; with --by-season, a campaign id.
        #[arg(value_name = "RUN|CAMPAIGN")]
        target: String,
        /// Roll CAMPAIGN's finished runs up by season: treated and control members (each once
        /// per season), their goal rates, and the uplift with its confidence interval.
        #[arg(long)]
        by_season: bool,
        /// `text` or `json` with --by-season.
        #[arg(long, value_enum, default_value_t = out::Format::Text)]
        format: out::Format,
    },
    /// Run the daemon: schedules, waves, dispatch, tracking, API.
    Run {
        /// Stop after this many seconds (for tests and trials); runs until SIGTERM otherwise.
        #[arg(long)]
        exit_after: Option<u64>,
        /// Seconds SIGTERM waits for in-flight batches and HTTP requests before giving up.
        #[arg(long, default_value_t = 20)]
        shutdown_grace: u64,
    },
    /// Run a whole campaign end to end on a fresh embedded database with a simulated population.
    Demo(demo::DemoArgs),
}

#[derive(Subcommand)]
enum ConsentCmd {
    /// Record a consent change: exactly one of --opt-out, --opt-in, --dnd, --no-dnd.
    Set {
        msisdn: String,
        #[arg(long, group = "change", required = true)]
        opt_out: bool,
        #[arg(long, group = "change")]
        opt_in: bool,
        #[arg(long, group = "change")]
        dnd: bool,
        #[arg(long, group = "change")]
        no_dnd: bool,
        /// Why, e.g. "asked in shop 12, signed form 2026-11-30" (kept with the change).
        #[arg(long)]
        reason: String,
    },
    /// Print a subscriber's consent history.
    Show { msisdn: String },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a principal and print its token (shown once; only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
        /// admin, operator, approver, analyst, agent or gateway.
        #[arg(long)]
        role: String,
        /// The team an agent's token is bound to (agents only).
        #[arg(long)]
        team: Option<String>,
    },
    /// Revoke a principal's token.
    Revoke { name: String },
    /// List principals (never their tokens).
    List,
}

/// The whole program: parses the command line, runs the command, returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // One rustls provider for the whole process (reqwest is built without one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Opens and migrates the database, and reads subscribers with the workflows folder's
/// attribute catalogue, which the database must already have (`campaignd migrate`).
async fn open_store(cfg: &Config) -> anyhow::Result<store::Store> {
    let store = open_migrated(cfg).await?;
    let cat = catalogue_of(cfg)?;
    store
        .use_catalogue(cat)
        .await
        .context("the attribute catalogue does not match the database")?;
    Ok(store)
}

async fn open_migrated(cfg: &Config) -> anyhow::Result<store::Store> {
    let store = store::Store::connect_as(
        &cfg.database_url,
        cfg.database_schema.as_deref(),
        &worker_name(cfg),
    )
    .await
    .with_context(|| format!("cannot open database {}", redact(&cfg.database_url)))?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

/// The attribute catalogue of the configured workflows folder (the shipped one when the
/// folder has no `attributes.yaml`); every problem printed with its location.
fn catalogue_of(cfg: &Config) -> anyhow::Result<std::sync::Arc<catalogue::Catalogue>> {
    spec::catalogue::load_catalogue(&cfg.workflows).map_err(|diags| {
        for d in &diags {
            out::line(&d.to_string());
        }
        anyhow::anyhow!(
            "{} problem(s) in the attribute catalogue; nothing was changed",
            diags.len()
        )
    })
}

/// Hides a password in a database URL.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(url) = cli.database_url {
        cfg.database_url = url;
    }
    match cli.cmd {
        Cmd::Validate { path } => Ok(validate(&path)),
        Cmd::Schema {
            attributes: false, ..
        } => {
            out::line(&spec::schema_json());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Schema {
            attributes: true,
            workflows,
        } => {
            if let Some(w) = workflows {
                cfg.workflows = w;
            }
            for l in out::attributes(&*catalogue_of(&cfg)?) {
                out::line(&l);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Migrate => {
            let cat = catalogue_of(&cfg)?;
            let store = open_migrated(&cfg).await?;
            let report = store
                .apply_catalogue(cat)
                .await
                .context("cannot apply the attribute catalogue; nothing was changed")?;
            for (what, names) in [
                ("added column(s) for", &report.added),
                ("indexed", &report.indexed),
                ("dropped the index of", &report.unindexed),
            ] {
                if !names.is_empty() {
                    out::line(&format!("{what}: {}", names.join(", ")));
                }
            }
            if !report.unused.is_empty() {
                out::line(&format!(
                    "column(s) no attribute declares, kept with their data: {}",
                    report.unused.join(", ")
                ));
            }
            out::line(&format!(
                "database {} is up to date",
                redact(&cfg.database_url)
            ));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Import {
            csv,
            mapping,
            update,
        } => import(&cfg, &csv, &mapping, update).await,
        Cmd::ImportHistory { csv, mapping } => {
            import_records(
                &cfg,
                subscribers::RecordKind::History,
                &csv,
                mapping.as_deref(),
            )
            .await
        }
        Cmd::ImportEvents { csv, mapping } => {
            import_records(
                &cfg,
                subscribers::RecordKind::Events,
                &csv,
                mapping.as_deref(),
            )
            .await
        }
        Cmd::Prune => {
            let store = open_store(&cfg).await?;
            let p = store
                .prune(&store.catalogue().retention(), store::wall_now())
                .await?;
            out::line(&format!(
                "pruned {} monthly and {} daily history row(s), {} event(s)",
                p.months, p.days, p.events
            ));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Consent(cmd) => consent(&cfg, cmd).await,
        Cmd::GenerateBase {
            subscribers,
            seed,
            history_months,
        } => {
            let store = open_store(&cfg).await?;
            insert_base(
                &store,
                &demo::Base {
                    subscribers,
                    seed,
                    history_months,
                    now: store::wall_now(),
                },
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plan { campaign } => {
            let store = open_store(&cfg).await?;
            let wf = load_campaign(&cfg.workflows, &campaign)?;
            let funnel =
                audience::preview(&store, &wf, cfg.global_holdout.as_ref(), store::wall_now())
                    .await?;
            out::funnel(&campaign, &wf.waves[0].id, &funnel);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Trigger { campaign } => {
            let store = open_store(&cfg).await?;
            let wf = load_campaign(&cfg.workflows, &campaign)?;
            let mut ec = engine::EngineConfig::new("cli", cfg.workflows.join("calendars"));
            ec.require_approval = cfg.approvals.required;
            ec.loaded_by = cfg.operator.clone();
            let engine =
                engine::Engine::new(store, engine::clock::Clock::Database, HashMap::new(), ec)?;
            engine.load(vec![wf]).await?;
            let run_id = engine.trigger(&campaign, "manual").await?;
            engine
                .store()
                .audit(
                    store::wall_now(),
                    &cfg.operator,
                    store::audit::action::TRIGGER,
                    &format!("campaign {campaign}"),
                    Some(&format!("run {run_id}")),
                )
                .await?;
            out::line(&format!(
                "run {run_id} of {campaign} started; the daemon carries it out"
            ));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Versions { campaign } => {
            let store = open_store(&cfg).await?;
            for v in store.version_approvals(&campaign).await? {
                let approved = match (&v.approved_by, v.approved_at) {
                    (Some(by), Some(at)) => format!("approved by {by} at {}", out::time(at)),
                    _ => "awaiting approval".to_owned(),
                };
                out::line(&format!(
                    "{:>5}  {}  {}  loaded by {}  {approved}",
                    v.id,
                    &v.hash[..12],
                    out::time(v.loaded_at),
                    v.loaded_by.as_deref().unwrap_or("(unknown)"),
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Holdout { campaign, period } => {
            let store = open_store(&cfg).await?;
            let periods = store.holdout_periods(&campaign, period.as_deref()).await?;
            if periods.is_empty() {
                out::line(&format!("{campaign} holds nobody out"));
            }
            for p in periods {
                out::line(&format!(
                    "{:<16}  {:>9} members  drawn {} to {}",
                    p.period,
                    p.members,
                    out::time(p.first_drawn_at),
                    out::time(p.last_drawn_at),
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Monitor { id, list } => monitor_now(&cfg, &id, list).await,
        Cmd::Approve {
            campaign,
            version,
            token,
        } => approve(&cfg, &campaign, version, &token).await,
        Cmd::Token(cmd) => tokens(&cfg, cmd).await,
        Cmd::Audit { since } => {
            let since = match since {
                None => 0,
                Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
                    .with_context(|| {
                        format!("--since {t}: expected RFC 3339, e.g. 2026-11-01T00:00:00Z")
                    })?
                    .timestamp_millis(),
            };
            let store = open_store(&cfg).await?;
            for e in store.audit_since(since).await? {
                out::line(&format!(
                    "{}  {:<16}  {:<13}  {}{}",
                    out::time(e.at),
                    e.principal,
                    e.action,
                    e.subject,
                    e.detail.map(|d| format!("  ({d})")).unwrap_or_default()
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Diff { campaign, from, to } => {
            let store = open_store(&cfg).await?;
            let a = version_bundle(&store, &campaign, from).await?;
            let b = version_bundle(&store, &campaign, to).await?;
            out::diff(&a, &b);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Why { msisdn, campaign } => {
            let store = open_store(&cfg).await?;
            for line in why(&store, &msisdn, campaign.as_deref()).await? {
                out::line(&line);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Report {
            target,
            by_season: true,
            format,
        } => {
            let store = open_store(&cfg).await?;
            if store.versions(&target).await?.is_empty() {
                bail!("campaign `{target}` has no stored version (unknown, or never loaded)")
            }
            let now = store.db_now().await?;
            let report = engine::season_report(&store, &target, now).await?;
            out::seasons(&report, format)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Report { target, format, .. } => {
            let run_id: i64 = target.parse().map_err(|_| {
                anyhow::anyhow!(
                    "`{target}` is not a run id: expected a number (or --by-season CAMPAIGN)"
                )
            })?;
            let store = open_store(&cfg).await?;
            let Some(json) = store.run_report(run_id).await? else {
                bail!("run {run_id} has no report (not finished, or unknown)")
            };
            let report: evaluate::Report =
                serde_json::from_str(&json).context("stored report does not parse")?;
            out::report(&report, format);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            exit_after,
            shutdown_grace,
        } => daemon(cfg, exit_after, shutdown_grace).await,
        Cmd::Demo(args) => demo::run(args).await,
    }
}

async fn approve(
    cfg: &Config,
    campaign: &str,
    version: Option<i64>,
    token: &str,
) -> anyhow::Result<ExitCode> {
    use store::auth::{Approval, Role};
    let store = open_store(cfg).await?;
    let Some(who) = store.principal_for_token(token).await? else {
        bail!("the token is unknown or revoked")
    };
    if !matches!(who.role, Role::Approver | Role::Admin) {
        bail!(
            "{} has role {}; approving needs approver or admin",
            who.name,
            who.role
        );
    }
    let version = match version {
        Some(v) => v,
        None => {
            let wf = load_campaign(&cfg.workflows, campaign)?;
            let id = store
                .upsert_version(
                    &wf.campaign,
                    &wf.hash,
                    &wf.bundle.to_json(),
                    store::wall_now(),
                )
                .await?;
            store.set_loaded_by(id, &cfg.operator).await?;
            id
        }
    };
    match store.version_approval(version).await? {
        Some(v) if v.campaign == campaign => {}
        Some(v) => bail!(
            "version {version} belongs to campaign `{}`, not `{campaign}`",
            v.campaign
        ),
        None => bail!("version {version} does not exist"),
    }
    match store
        .approve_version(version, &who.name, store::wall_now())
        .await?
    {
        Approval::Approved => {
            out::line(&format!(
                "version {version} of {campaign} approved by {}",
                who.name
            ));
            Ok(ExitCode::SUCCESS)
        }
        Approval::AlreadyApproved { by } => {
            out::line(&format!(
                "version {version} of {campaign} was already approved by {by}"
            ));
            Ok(ExitCode::SUCCESS)
        }
        Approval::OwnVersion => bail!(
            "{} loaded version {version}; another principal with the approver role must approve it (four eyes)",
            who.name
        ),
        Approval::NoSuchVersion => bail!("version {version} does not exist"),
    }
}

async fn tokens(cfg: &Config, cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    use store::audit::action;
    let store = open_store(cfg).await?;
    let now = store::wall_now();
    match cmd {
        TokenCmd::Create { name, role, team } => {
            let Some(r) = store::auth::Role::parse(&role) else {
                bail!(
                    "--role {role}: expected admin, operator, approver, analyst, agent or gateway"
                )
            };
            if let (store::auth::Role::Agent, Some(t)) = (r, &team) {
                check_agent_team(&cfg.workflows, &name, t)?;
            }
            let token = store.create_token(&name, r, team.as_deref(), now).await?;
            store
                .audit(
                    now,
                    &cfg.operator,
                    action::TOKEN_CREATE,
                    &format!("principal {name}"),
                    Some(&format!("role {role}")),
                )
                .await?;
            // The only place the token is ever shown: stdout, for a secrets manager to take.
            out::line(&token);
            eprintln!("token for {name} ({role}) created; it is shown once and stored hashed");
        }
        TokenCmd::Revoke { name } => {
            if !store.revoke_token(&name, now).await? {
                bail!("no active principal named `{name}`");
            }
            store
                .audit(
                    now,
                    &cfg.operator,
                    action::TOKEN_REVOKE,
                    &format!("principal {name}"),
                    None,
                )
                .await?;
            out::line(&format!("token of {name} revoked"));
        }
        TokenCmd::List => {
            for t in store.tokens().await? {
                out::line(&format!(
                    "{:<20}  {:<9}  {:<16}  created {}{}",
                    t.name,
                    t.role,
                    t.team.unwrap_or_else(|| "-".into()),
                    out::time(t.created_at),
                    t.revoked_at
                        .map(|r| format!("  REVOKED {}", out::time(r)))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(path: &Path) -> ExitCode {
    let (ok, mut diags) = spec::load_dir(path);
    if path.is_dir() {
        let (monitors, staff, monitor_diags) = spec::monitor::load_monitors(path);
        diags.extend(monitor_diags);
        for m in &monitors {
            out::line(&format!(
                "ok  {}  monitor {}: {} signal(s), levels {}, schedule {}",
                m.path,
                m.id,
                m.signals.len(),
                m.levels
                    .iter()
                    .map(|l| format!("{} {}", l.name, l.score))
                    .collect::<Vec<_>>()
                    .join(", "),
                m.schedule.cron_text
            ));
        }
        let (periods, period_diags) = spec::periods::load_all(path);
        diags.extend(period_diags);
        for (file, p) in &periods {
            out::line(&format!(
                "ok  {file}  {} period(s), dated to {}",
                p.by_name.len(),
                p.last_day().map_or("-".to_owned(), |d| d.to_string())
            ));
        }
        if !staff.staff.is_empty() {
            out::line(&format!(
                "ok  {}  {} staff",
                path.join(spec::monitor::STAFF_FILE).display(),
                staff.staff.len()
            ));
        }
        match spec::teams::load_teams(path) {
            Ok(Some(teams)) => out::line(&format!(
                "ok  {}  {} call-centre team(s), ordered by {}",
                path.join(spec::teams::TEAMS_FILE).display(),
                teams.teams.len(),
                teams.value
            )),
            Ok(None) => {}
            Err(d) => diags.extend(d),
        }
    }
    for wf in &ok {
        out::line(&format!(
            "ok  {}  campaign {} (version {}): {} wave(s), schedule {}",
            wf.bundle.path,
            wf.campaign,
            wf.short_hash(),
            wf.waves.len(),
            wf.schedule
                .as_ref()
                .map(|s| s.cron_text.as_str())
                .unwrap_or("manual")
        ));
    }
    for d in &diags {
        eprintln!("error: {d}");
    }
    if diags.is_empty() && !ok.is_empty() {
        ExitCode::SUCCESS
    } else {
        if ok.is_empty() && diags.is_empty() {
            eprintln!("error: {}: no workflow files found", path.display());
        } else {
            eprintln!("{} error(s)", diags.len());
        }
        ExitCode::FAILURE
    }
}

async fn monitor_now(cfg: &Config, id: &str, list: u64) -> anyhow::Result<ExitCode> {
    let (monitors, staff, diags) = spec::monitor::load_monitors(&cfg.workflows);
    for d in &diags {
        eprintln!("error: {d}");
    }
    if !diags.is_empty() {
        bail!("{} error(s) in {}", diags.len(), cfg.workflows.display());
    }
    let Some(m) = monitors.iter().find(|m| m.id == id) else {
        let known: Vec<&str> = monitors.iter().map(|m| m.id.as_str()).collect();
        bail!(
            "no monitor `{id}` in {}: expected one of {}",
            cfg.workflows.join(spec::monitor::MONITORS_DIR).display(),
            if known.is_empty() {
                "(none)".to_owned()
            } else {
                known.join(", ")
            }
        );
    };
    let store = open_store(cfg).await?;
    // A slot of its own (this second), so the daemon's scheduled slots still run.
    let now = store::wall_now();
    let slot = now - now.rem_euclid(1000);
    match engine::monitor::evaluate(&store, m, &staff, slot, now).await? {
        None => out::line(&format!("{id}: this second was evaluated already")),
        Some(c) => out::line(&format!(
            "{id}: {} watched subscribers raise a signal; {} alerts opened, {} escalated, {} closed",
            c.watched, c.opened, c.escalated, c.closed
        )),
    }
    let open: Vec<_> = store
        .alerts(None, Some(store::alerts::EpisodeState::Open), 100_000)
        .await?
        .into_iter()
        .filter(|a| a.monitor == id)
        .collect();
    out::line(&format!("{} open alert(s)", open.len()));
    for a in open.iter().take(list as usize) {
        out::line(&format!(
            "  alert {:<6} {:<9} score {:>3}  {}  owner {}  {}",
            a.id,
            a.level,
            a.score,
            domain::mask(&a.msisdn),
            a.owner,
            a.signals
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn load_campaign(dir: &Path, campaign: &str) -> anyhow::Result<spec::Workflow> {
    let (ok, diags) = spec::load_dir(dir);
    if let Some(wf) = ok.into_iter().find(|w| w.campaign == campaign) {
        return Ok(wf);
    }
    for d in &diags {
        eprintln!("error: {d}");
    }
    bail!(
        "no valid workflow for campaign `{campaign}` in {}",
        dir.display()
    )
}

async fn version_bundle(
    store: &store::Store,
    campaign: &str,
    id: i64,
) -> anyhow::Result<spec::Bundle> {
    let Some((c, _, source)) = store.version_source(id).await? else {
        bail!("version {id} does not exist")
    };
    if c != campaign {
        bail!("version {id} belongs to campaign `{c}`, not `{campaign}`");
    }
    Ok(spec::Bundle::from_json(&source)?)
}

async fn import(
    cfg: &Config,
    csv: &Path,
    mapping: &Path,
    update: bool,
) -> anyhow::Result<ExitCode> {
    let map_text = std::fs::read_to_string(mapping)
        .with_context(|| format!("cannot read {}", mapping.display()))?;
    let map = match subscribers::parse_mapping(
        &catalogue_of(cfg)?,
        &mapping.display().to_string(),
        &map_text,
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let store = open_store(cfg).await?;
    let outcome = match import::import_csv(&store, &map, csv, update, &cfg.operator, true).await? {
        Ok(o) => o,
        Err(failure) => {
            eprintln!("{failure}");
            eprintln!(
                "nothing was imported (the whole file is one transaction; the base is as it was)"
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let n = outcome.rows;
    store
        .audit(
            store::wall_now(),
            &cfg.operator,
            store::audit::action::IMPORT,
            &csv.display().to_string(),
            Some(&format!(
                "{n} subscribers{}; consent added: {} opt-out(s), {} do-not-disturb",
                if update { ", update" } else { "" },
                outcome.opt_outs_added,
                outcome.dnd_added
            )),
        )
        .await?;
    out::line(&format!("imported {n} subscribers from {}", csv.display()));
    Ok(ExitCode::SUCCESS)
}

async fn import_records(
    cfg: &Config,
    kind: subscribers::RecordKind,
    csv: &Path,
    mapping: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let cat = catalogue_of(cfg)?;
    let mapping = match records::read_mapping(&cat, kind, mapping)? {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let store = open_store(cfg).await?;
    let outcome = match records::import_records(&store, kind, mapping, csv, true).await? {
        Ok(o) => o,
        Err(failure) => {
            eprintln!("{failure}");
            eprintln!("nothing was imported (the whole file is one transaction)");
            return Ok(ExitCode::FAILURE);
        }
    };
    let lines = records::summary(kind, csv, &outcome);
    store
        .audit(
            store::wall_now(),
            &cfg.operator,
            store::audit::action::IMPORT,
            &csv.display().to_string(),
            Some(&lines.join("; ")),
        )
        .await?;
    for l in lines {
        out::line(&l);
    }
    Ok(ExitCode::SUCCESS)
}

async fn consent(cfg: &Config, cmd: ConsentCmd) -> anyhow::Result<ExitCode> {
    use store::subscribers::ConsentKind;
    let store = open_store(cfg).await?;
    match cmd {
        ConsentCmd::Set {
            msisdn,
            opt_out,
            opt_in,
            dnd,
            no_dnd,
            reason,
        } => {
            let (kind, state) = match (opt_out, opt_in, dnd, no_dnd) {
                (true, ..) => (ConsentKind::OptOut, true),
                (_, true, ..) => (ConsentKind::OptOut, false),
                (_, _, true, _) => (ConsentKind::Dnd, true),
                _ => (ConsentKind::Dnd, false),
            };
            let said =
                import::set_consent(&store, &msisdn, kind, state, &cfg.operator, &reason).await?;
            out::line(&said);
        }
        ConsentCmd::Show { msisdn } => {
            for line in import::show_consent(&store, &msisdn).await? {
                out::line(&line);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `campaignd why`: the lines it prints (the number masked).
async fn why(
    store: &store::Store,
    msisdn: &str,
    campaign: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    use store::story::Step;
    let number =
        domain::Msisdn::parse(msisdn.trim()).map_err(|e| anyhow::anyhow!("MSISDN: {e}"))?;
    let Some(id) = store.subscriber_by_msisdn(number.expose()).await? else {
        anyhow::bail!("no subscriber {number}");
    };
    let mut lines = vec![match campaign {
        Some(c) => format!("{number} (subscriber {id}) in campaign {c}"),
        None => format!("{number} (subscriber {id})"),
    }];
    let story = store.subscriber_story(id, campaign).await?;
    // A wave's contacts are decided in one transaction and written after it, in batches
    // (`store::batches`): until then this subscriber's may be one of them.
    let writing = store.planned_pending(None).await?;
    if writing.contacts > 0 {
        lines.push(format!(
            "  note: {} decided contacts are still being written ({} batches); this subscriber's may be among them",
            writing.contacts, writing.batches
        ));
    }
    if story.is_empty() {
        lines.push("  no campaign has considered this subscriber".into());
    }
    let at = |t: Option<i64>| t.map(out::time);
    for s in story {
        let head = format!(
            "{}  {} run {} wave {}:",
            out::time(s.at),
            s.campaign,
            s.run_id,
            s.wave
        );
        let what = match s.step {
            Step::LeftOut { reason } => format!("left out by {reason}"),
            Step::Entered { by } => format!("entered by the trigger ({by})"),
            Step::Contact {
                arm: store::contacts::Arm::Control,
                ..
            } => "held out (control group), not contacted".to_owned(),
            Step::Contact {
                channel,
                purpose,
                variant,
                choice,
                state,
                sent_at,
                delivered_at,
                responded_at,
                response,
                last_error,
                ..
            } => {
                let variant = variant
                    .map(|v| format!(", variant {v}"))
                    .unwrap_or_default();
                let fallback = match choice {
                    domain::Choice::Second => ", second choice: the first did not reach them",
                    domain::Choice::First => "",
                };
                let mut w =
                    format!("contacted by {channel} ({purpose}{variant}{fallback}): {state}");
                for (label, t) in [
                    ("sent", at(sent_at)),
                    ("delivered", at(delivered_at)),
                    ("responded", at(responded_at)),
                ] {
                    if let Some(t) = t {
                        w.push_str(&format!(", {label} {t}"));
                    }
                }
                if let Some(r) = response {
                    w.push_str(&format!(" with {r}"));
                }
                if let Some(e) = last_error {
                    w.push_str(&format!(" (last error: {e})"));
                }
                w
            }
        };
        lines.push(format!("{head} {what}"));
    }
    let consent = store.consent_history(id).await?;
    if !consent.is_empty() {
        lines.push("consent:".into());
        for c in consent {
            lines.push(format!(
                "{}  {} {} ({}, {})",
                out::time(c.at),
                c.kind,
                if c.state { "on" } else { "off" },
                c.source,
                c.principal
            ));
        }
    }
    Ok(lines)
}

/// Builds the channels every wave kind needs.
/// Checks each channel's gateway once at start, without sending (Kannel: a sendsms call
/// with no receiver). Logged, and shown by `/readyz`; a failure does not stop the daemon:
/// an unreachable gateway is held back by the circuit breaker until it answers, and a
/// refused account pauses its channel at the first send.
async fn check_gateways(
    channels: &HashMap<String, Arc<dyn channels::Channel>>,
) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (kind, channel) in channels {
        let verdict = match channel.healthcheck().await {
            Ok(()) => {
                info!(message = "Gateway answered the start check.", channel = %kind);
                "ok".to_owned()
            }
            Err(e @ channels::SendError::Refused(_)) => {
                error!(message = "Gateway refused campaignd at start; fix its credentials or URL.", channel = %kind, error = %e);
                e.to_string()
            }
            Err(e) => {
                warn!(message = "Gateway failed the start check; sends wait for it.", channel = %kind, error = %e);
                e.to_string()
            }
        };
        out.insert(kind.clone(), verdict);
    }
    out
}

/// The teams' working hours for the API's `call back later` check (`api::CallHours`), by
/// the same local clock the engine releases tasks by (`engine::calls::team_clock`).
fn call_hours(dir: spec::teams::TeamDirectory) -> api::CallHours {
    Arc::new(move |team, at| {
        let t = dir.get(team)?;
        Some(if engine::calls::team_clock(t, at).1 {
            Ok(())
        } else {
            Err(format!(
                "{}-{} {}",
                t.hours.start.format("%H:%M"),
                t.hours.end.format("%H:%M"),
                t.timezone
            ))
        })
    })
}

/// The teams' agents and zones for the API, as read now (at daemon start).
fn call_teams(workflows: &Path, dir: &spec::teams::TeamDirectory) -> api::CallTeams {
    api::CallTeams {
        file: workflows
            .join(spec::teams::TEAMS_FILE)
            .display()
            .to_string(),
        teams: dir
            .teams
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    api::CallTeam {
                        agents: t.agents.clone(),
                        timezone: t.timezone.name().to_owned(),
                    },
                )
            })
            .collect(),
    }
}

/// Refuses an agent token the workflows folder's `teams.yaml` would not let work: a
/// call-centre team's agent must be in its `agents` (the API checks the same at every
/// queue route), and a team the file does not declare must be a desk of `staff.yaml` (a
/// service desk, whose agents work its tasks and alerts). No teams file: nothing to check.
fn check_agent_team(workflows: &Path, name: &str, team: &str) -> anyhow::Result<()> {
    let shown = workflows
        .join(spec::teams::TEAMS_FILE)
        .display()
        .to_string();
    let dir = match spec::teams::load_teams(workflows) {
        Ok(None) => return Ok(()),
        Ok(Some(d)) => d,
        Err(diags) => {
            for d in &diags {
                out::line(&d.to_string());
            }
            bail!(
                "{} problem(s) in {shown}; fix them before creating agent tokens",
                diags.len()
            )
        }
    };
    match dir.get(team) {
        Some(t) if t.agents.iter().any(|a| a == name) => Ok(()),
        Some(t) => bail!(
            "agent `{name}` is not in team `{team}`'s agents in {shown} ({}): add it there (and restart the daemon) before creating its token",
            t.agents.join(", ")
        ),
        None => {
            let (_, staff, _) = spec::monitor::load_monitors(workflows);
            if staff.get(team).is_some() {
                return Ok(());
            }
            bail!(
                "team `{team}` is not a call-centre team in {shown} ({}) nor a desk of {}",
                dir.ids().join(", "),
                workflows.join(spec::monitor::STAFF_FILE).display()
            )
        }
    }
}

/// `GET /campaigns/{id}/seasons`: the engine's season roll-up, as of the database clock.
fn season_reports(store: store::Store) -> api::SeasonReports {
    Arc::new(move |campaign: String| {
        let store = store.clone();
        Box::pin(async move {
            if store
                .versions(&campaign)
                .await
                .map_err(|e| e.to_string())?
                .is_empty()
            {
                return Ok(None);
            }
            let now = store.db_now().await.map_err(|e| e.to_string())?;
            let report = engine::season_report(&store, &campaign, now)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Some(evaluate::render_seasons_json(&report)))
        })
    })
}

/// `/readyz`'s view of the gateways: the engine's breakers and the start checks.
fn gateway_status(
    engine: Arc<engine::Engine>,
    start_checks: HashMap<String, String>,
) -> api::GatewayStatus {
    Arc::new(move || {
        engine
            .breaker_states()
            .into_iter()
            .map(|(channel, state)| api::GatewayHealth {
                start_check: start_checks.get(&channel).cloned(),
                breaker: state.name().to_owned(),
                reason: state.reason().map(str::to_owned),
                channel,
            })
            .collect()
    })
}

pub(crate) async fn build_channels(
    cfg: &Config,
    store: &store::Store,
) -> anyhow::Result<HashMap<String, Arc<dyn channels::Channel>>> {
    let mut map: HashMap<String, Arc<dyn channels::Channel>> = HashMap::new();
    // The teams file's own errors stop the daemon before this (`daemon`); here it only
    // says whose call tasks wait for pacing.
    let paced: Vec<String> = spec::teams::load_teams(&cfg.workflows)
        .ok()
        .flatten()
        .map(|t| t.teams.into_iter().map(|t| t.id).collect())
        .unwrap_or_default();
    for kind in domain::ChannelKind::ALL {
        let channel: Arc<dyn channels::Channel> = match kind {
            domain::ChannelKind::OutboundCall | domain::ChannelKind::Service => Arc::new(
                channels::worklist::Worklist::new(store.clone(), kind.as_str())
                    .with_paced_teams(paced.clone()),
            ),
            // Subscribers' mail goes through the `[email]` transport staff mail uses.
            domain::ChannelKind::Email => Arc::new(channels::email::SubscriberMail::new(
                channels::email::Mailer::new(&cfg.email, &cfg.email_from)?,
            )),
            domain::ChannelKind::Sms => channels::sms::build_for(&cfg.sms, store).await?,
        };
        map.insert(kind.as_str().into(), channel);
    }
    Ok(map)
}

/// This process's worker id: `worker_id`, or host name and process id. It signs leases and
/// names the process's PostgreSQL sessions.
fn worker_name(cfg: &Config) -> String {
    cfg.worker_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()))
}

fn engine_config(cfg: &Config) -> engine::EngineConfig {
    let mut ec = engine::EngineConfig::new(worker_name(cfg), cfg.workflows.join("calendars"));
    ec.batch_size = cfg.engine.batch_size;
    ec.lease = Duration::from_secs(cfg.engine.lease_secs);
    ec.max_attempts = cfg.engine.max_attempts;
    ec.retry_base = Duration::from_secs(cfg.engine.retry_base_secs);
    ec.retry_max = Duration::from_secs(cfg.engine.retry_max_secs);
    ec.breaker_threshold = cfg.engine.breaker_threshold.max(1);
    ec.breaker_cool_down = Duration::from_secs(cfg.engine.breaker_cool_down_secs);
    ec.task_digest_every = Duration::from_secs(cfg.engine.task_digest_every_secs.max(60));
    ec.poll = Duration::from_millis(cfg.engine.poll_ms);
    ec.dispatchers_per_channel = cfg.engine.dispatchers_per_channel.max(1);
    ec.global_holdout = cfg.global_holdout.clone();
    ec.require_approval = cfg.approvals.required;
    ec.loaded_by = cfg.operator.clone();
    ec
}

/// The callbacks' credentials: the DLR signing secret from the environment and the source
/// allowlists of the config. Without the variable the daemon does not start, except on the
/// embedded defaults (SQLite and the SMS outbox, nothing leaves the machine), where a secret
/// is generated once per database and stored in it.
async fn callback_auth(
    cfg: &Config,
    store: &store::Store,
) -> anyhow::Result<api::auth::CallbackAuth> {
    let var = channels::sms::KannelSms::CALLBACK_SECRET_ENV;
    let raw = std::env::var(var).unwrap_or_default();
    let embedded = !store.is_postgres() && matches!(cfg.sms, channels::sms::SmsConfig::Outbox(_));
    let stored = if raw.is_empty() && embedded {
        eprintln!(
            "note: {var} is not set; embedded defaults (SQLite, SMS outbox): using a secret generated for this database"
        );
        Some(store.stored_secret("callback").await?)
    } else {
        None
    };
    if raw.is_empty() && stored.is_none() {
        bail!(
            "{var} is not set: delivery-report URLs are signed with it and the callback checks them (at least 16 bytes, e.g. `export {var}=$(openssl rand -hex 32)`)"
        );
    }
    let secret = match stored {
        Some(s) => s,
        None => {
            store::auth::Secret::new(raw.into_bytes()).map_err(|e| anyhow::anyhow!("{var}: {e}"))?
        }
    };
    let cidrs = |key: &str, list: &[String]| -> anyhow::Result<Vec<api::auth::Cidr>> {
        list.iter()
            .map(|c| {
                api::auth::Cidr::parse(c).map_err(|e| anyhow::anyhow!("[callbacks] {key}: {e}"))
            })
            .collect()
    };
    Ok(api::auth::CallbackAuth {
        dlr_secret: Some(secret),
        dlr_allow: cidrs("dlr_allow", &cfg.callbacks.dlr_allow)?,
        mo_allow: cidrs("mo_allow", &cfg.callbacks.mo_allow)?,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "campaignd".into())
}

/// Waits for a PostgreSQL server that is not up yet (a daemon started with, or before, its
/// database), retrying with backoff; anything else fails at once. A SQLite file is never
/// "down": its errors are reported.
async fn wait_for_database(cfg: &Config) -> anyhow::Result<()> {
    if cfg.database_url.starts_with("sqlite:") {
        return Ok(());
    }
    let mut pause = Duration::from_secs(1);
    loop {
        match store::Store::connect(&cfg.database_url, cfg.database_schema.as_deref()).await {
            Ok(_) => return Ok(()),
            Err(store::StoreError::BadUrl(u)) => bail!("bad database URL {}", redact(&u)),
            Err(e) => {
                eprintln!(
                    "waiting for the database {} ({e}); next try in {}s",
                    redact(&cfg.database_url),
                    pause.as_secs()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(engine::MAX_FAILURE_PAUSE);
            }
        }
    }
}

/// Stores the spooled callbacks whenever there are any and the database takes them.
async fn spool_loop(
    spool: Arc<api::spool::Spool>,
    store: store::Store,
    cancel: CancellationToken,
    hb: supervise::Heartbeat,
) {
    let mut failures = 0u32;
    while !cancel.is_cancelled() {
        hb.beat();
        let mut pause = SPOOL_POLL;
        match spool.replay(&store, store::wall_now()).await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                pause = engine::after_failures(SPOOL_POLL, failures);
                warn!(message = "Spooled callbacks not stored yet.", error = %e, pending = spool.pending(), retry_in_ms = pause.as_millis() as u64);
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// How often the spool is looked at.
const SPOOL_POLL: Duration = Duration::from_secs(1);

async fn daemon(cfg: Config, exit_after: Option<u64>, grace: u64) -> anyhow::Result<ExitCode> {
    wait_for_database(&cfg).await?;
    let store = open_store(&cfg).await?;
    let spool = api::spool::Spool::open(&cfg.callbacks.spool_dir)
        .context("cannot open the callback spool ([callbacks] spool_dir)")?;
    let callbacks = callback_auth(&cfg, &store).await?;
    let _lock = store.lock_daemon()?;
    let (workflows, mut diags) = spec::load_dir(&cfg.workflows);
    let (monitors, staff, monitor_diags) = spec::monitor::load_monitors(&cfg.workflows);
    diags.extend(monitor_diags);
    let teams = match spec::teams::load_teams(&cfg.workflows) {
        Ok(t) => t,
        Err(d) => {
            diags.extend(d);
            None
        }
    };
    for d in &diags {
        eprintln!("error: {d}");
    }
    if !diags.is_empty() {
        bail!(
            "{} workflow error(s); fix them or move the files out of {}",
            diags.len(),
            cfg.workflows.display()
        );
    }
    for m in &monitors {
        info!(message = "Monitor loaded.", monitor = %m.id, schedule = %m.schedule.cron_text);
    }
    let channels = build_channels(&cfg, &store).await?;
    let start_checks = check_gateways(&channels).await;
    let mailer = channels::email::Mailer::new(&cfg.email, &cfg.email_from)?;
    let engine = engine::Engine::new(
        store.clone(),
        engine::clock::Clock::Database,
        channels,
        engine_config(&cfg),
    )?;
    let call_hours = teams.clone().map(call_hours);
    let call_teams = teams
        .as_ref()
        .map(|t| Arc::new(call_teams(&cfg.workflows, t)));
    let engine = match teams {
        Some(t) => {
            for team in &t.teams {
                info!(
                    message = "Call-centre team loaded.",
                    team = %team.id,
                    capacity_per_day = team.capacity_per_day,
                    pacing_per_hour = team.pacing_per_hour
                );
            }
            engine.with_teams(t)
        }
        None => engine,
    };
    let engine = Arc::new(
        engine
            .with_mailer(mailer, Vec::new())
            .with_alerts(cfg.alerts.email.clone())
            .with_monitors(monitors, staff)
            .with_inbound_backlog({
                let spool = spool.clone();
                Arc::new(move || !spool.is_clear())
            }),
    );
    for (campaign, version) in engine.load(workflows).await? {
        info!(message = "Workflow loaded.", campaign = %campaign, version);
    }
    let addr = tokio::net::lookup_host(&cfg.listen)
        .await
        .with_context(|| format!("cannot resolve listen address {}", cfg.listen))?
        .next()
        .with_context(|| format!("listen address {} resolves to nothing", cfg.listen))?;
    // api::bind, not TcpListener::bind: the large backlog keeps smsbox's bursts of callback
    // connections from being dropped (see api::LISTEN_BACKLOG).
    let listener = api::bind(addr).with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    out::line(&format!(
        "campaignd listening on http://{addr} (database {})",
        redact(&cfg.database_url)
    ));
    let cancel = CancellationToken::new();
    let api_cancel = cancel.clone();
    let serve_opts = api::ServeOptions {
        limits: cfg.http.limits(Duration::from_secs(grace)),
        supervisor: engine.supervisor(),
        expect_engine: true,
        callbacks,
        spool: Some(spool.clone()),
        gateways: Some(gateway_status(engine.clone(), start_checks)),
        seasons: Some(season_reports(store.clone())),
        call_hours,
        call_teams,
        ..api::ServeOptions::default()
    };
    let api = tokio::spawn(api::serve_with(
        listener,
        api::AppState {
            store: store.clone(),
        },
        serve_opts,
        async move { api_cancel.cancelled().await },
    ));
    let signal_cancel = cancel.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match exit_after { Some(s) => tokio::time::sleep(Duration::from_secs(s)).await, None => std::future::pending().await } } => {}
        }
        info!(message = "Shutting down: no new claims; settling batches in flight.");
        signal_cancel.cancel();
    });
    {
        let (sup, store, cancel) = (engine.supervisor(), store.clone(), cancel.clone());
        tokio::spawn(async move {
            sup.run("spool", &cancel, supervise::Backoff::default(), |hb| {
                spool_loop(spool.clone(), store.clone(), cancel.clone(), hb)
            })
            .await;
        });
    }
    let run = tokio::spawn(engine.clone().run(cancel.clone(), true));
    cancel.cancelled().await;
    match tokio::time::timeout(Duration::from_secs(grace), run).await {
        Ok(res) => res??,
        Err(_) => {
            // Batches still in flight keep their leases; they return to the queue when the
            // lease expires, and the gateway sees at most those messages twice.
            eprintln!(
                "warning: shutdown grace of {grace}s passed with batches in flight; their leases will expire"
            );
        }
    }
    // Bounded by the same grace inside api::serve_with.
    match api.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: HTTP API stopped with an error: {e}"),
        Err(e) => eprintln!("warning: HTTP API task failed: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}
