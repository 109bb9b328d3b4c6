//! The daemon's config file (TOML). Every field has a default, so `campaignd run` works with
//! no file at all on embedded defaults (SQLite, outbox file, mail to files). Secrets never
//! live here: fields ending in `_env` name environment variables that hold them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// `sqlite://PATH` (default `sqlite://campaignd.db`) or `postgres://...`. Overridden by
    /// `--database-url` / `CAMPAIGND_DATABASE_URL`.
    #[serde(default = "default_db")]
    pub(crate) database_url: String,
    /// PostgreSQL schema to use (search path); default `public`.
    #[serde(default)]
    pub(crate) database_schema: Option<String>,
    /// Folder of workflow files.
    #[serde(default = "default_workflows")]
    pub(crate) workflows: PathBuf,
    /// Address of the HTTP API and the gateway callbacks.
    #[serde(default = "default_listen")]
    pub(crate) listen: String,
    /// This replica's name in leases and logs; default: hostname and pid.
    #[serde(default)]
    pub(crate) worker_id: Option<String>,
    #[serde(default)]
    pub(crate) engine: EngineSection,
    /// Bounds of the HTTP server against slow and greedy clients.
    #[serde(default)]
    pub(crate) http: HttpSection,
    /// How SMS leave campaignd: `transport = "outbox"` (default: a JSON-lines file) or
    /// `transport = "http"` (Kannel's sendsms).
    #[serde(default)]
    pub(crate) sms: channels::sms::SmsConfig,
    /// How reports and alerts reach staff.
    #[serde(default = "default_email")]
    pub(crate) email: channels::email::EmailConfig,
    /// Sender address of staff e-mail.
    #[serde(default = "default_from")]
    pub(crate) email_from: String,
    /// The principal the CLI and the daemon act as when they load workflow files or import
    /// subscribers: recorded as the loader of each new version (who may then not approve
    /// it) and in the audit log.
    #[serde(default = "default_operator")]
    pub(crate) operator: String,
    #[serde(default)]
    pub(crate) approvals: ApprovalsSection,
    /// Source allowlists of the gateway callbacks. The DLR signing secret comes from
    /// `CAMPAIGND_CALLBACK_SECRET`, never from this file.
    #[serde(default)]
    pub(crate) callbacks: CallbacksSection,
    #[serde(default)]
    pub(crate) alerts: AlertsSection,
    /// A share of the whole base that no marketing campaign contacts, to measure the
    /// programme against customers it never touched: `share` (e.g. `0.02`) and `salt` (a
    /// new salt draws a new group, e.g. each year). Members are drawn by a hash of the salt
    /// and the subscriber, recorded when first met (`campaignd holdout @global`), and stay
    /// held out for as long as the salt does, even if the share is lowered. Care and staff
    /// alerts still reach them. Every replica must have the same table.
    #[serde(default, deserialize_with = "global_holdout")]
    pub(crate) global_holdout: Option<audience::GlobalHoldout>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GlobalHoldoutSection {
    share: f64,
    salt: String,
}

/// `[global_holdout]`, checked where it is written.
fn global_holdout<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<audience::GlobalHoldout>, D::Error> {
    let s = GlobalHoldoutSection::deserialize(d)?;
    audience::GlobalHoldout::new(s.share, s.salt)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Operational alerts to the team that runs campaignd (not to marketing staff).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertsSection {
    /// Who is mailed (through `[email]`) when a channel pauses because its gateway refused
    /// campaignd's account (rejected password, wrong `sendsms_url`): at most one mail per
    /// channel per hour. Plain addresses, e.g. `["sms-platform@operator.example"]`. Empty
    /// (the default): the ERROR log line and `/readyz` are the only signals.
    #[serde(default, deserialize_with = "addresses")]
    pub(crate) email: Vec<String>,
}

/// A list of plain e-mail addresses; a bad one is an error at its place in the file.
fn addresses<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for a in &list {
        if let Some(problem) = spec::rules::email_problem(a) {
            return Err(serde::de::Error::custom(format!(
                "`{a}` is not an e-mail address: {problem}"
            )));
        }
    }
    Ok(list)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApprovalsSection {
    /// Runs start only from versions approved by another principal with the approver
    /// role (`campaignd approve`). Default true; the demo approves its own version as
    /// principal `demo`.
    #[serde(default = "default_true")]
    pub(crate) required: bool,
}

impl Default for ApprovalsSection {
    fn default() -> Self {
        ApprovalsSection {
            required: default_true(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallbacksSection {
    /// Addresses or CIDRs (e.g. `"10.0.3.0/24"`) that may call `/callbacks/kannel/dlr`;
    /// empty: any (the per-message token still applies).
    #[serde(default)]
    pub(crate) dlr_allow: Vec<String>,
    /// Addresses or CIDRs that may call `/callbacks/kannel/mo`; empty: any (the gateway
    /// token still applies).
    #[serde(default)]
    pub(crate) mo_allow: Vec<String>,
    /// Folder where delivery reports and replies go, fsynced, while the database cannot
    /// take them; they are stored from there when it is back. Local to this daemon (like a
    /// write-ahead log): keep it on persistent disk. Default `campaignd-spool`.
    #[serde(default = "default_spool")]
    pub(crate) spool_dir: PathBuf,
}

fn default_spool() -> PathBuf {
    "campaignd-spool".into()
}

impl Default for CallbacksSection {
    fn default() -> Self {
        CallbacksSection {
            dlr_allow: Vec::new(),
            mo_allow: Vec::new(),
            spool_dir: default_spool(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_operator() -> String {
    "files".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EngineSection {
    /// Contacts claimed per dispatcher round.
    #[serde(default = "default_batch")]
    pub(crate) batch_size: u64,
    /// Seconds a claim is leased.
    #[serde(default = "default_lease")]
    pub(crate) lease_secs: u64,
    /// Optional safety cap on send attempts per contact. Unset (the default): a transient
    /// failure is retried until the contact's send-by deadline (the wave's `send_within`),
    /// however many attempts that takes, so a gateway outage of minutes fails nobody.
    #[serde(default)]
    pub(crate) max_attempts: Option<i32>,
    /// First retry delay in seconds (doubles per attempt, with jitter).
    #[serde(default = "default_retry")]
    pub(crate) retry_base_secs: u64,
    /// Longest retry delay in seconds: a recovered gateway is used again within this long.
    #[serde(default = "default_retry_max")]
    pub(crate) retry_max_secs: u64,
    /// Consecutive transient send failures that open a channel's circuit breaker: the
    /// dispatcher then claims nothing for that channel (contacts wait, attempts untouched).
    #[serde(default = "default_breaker_threshold")]
    pub(crate) breaker_threshold: u32,
    /// Seconds an open breaker waits before one message probes the gateway (default 10).
    #[serde(default = "default_breaker_cool_down")]
    pub(crate) breaker_cool_down_secs: u64,
    /// Seconds per service-task digest interval: each staff member gets at most one mail of
    /// their team's new tasks and the overdue tasks escalated to them per interval
    /// (default 3600). At least 60.
    #[serde(default = "default_task_digest_every")]
    pub(crate) task_digest_every_secs: u64,
    /// Milliseconds between housekeeping passes.
    #[serde(default = "default_poll")]
    pub(crate) poll_ms: u64,
    /// Dispatcher loops per channel in this process. More keep the gateway busier while
    /// another batch is claimed or settled (measured: 3 gives ~35k msg/s on 2 cores vs ~30k
    /// with 2); a crash can repeat up to dispatchers × batch_size messages in flight.
    #[serde(default = "default_dispatchers")]
    pub(crate) dispatchers_per_channel: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpSection {
    /// Seconds a connection has to send a request's line and headers; also how long an idle
    /// keep-alive connection stays open.
    #[serde(default = "default_header_secs")]
    pub(crate) header_read_timeout_secs: u64,
    /// Seconds a request has to send its whole body (408 after).
    #[serde(default = "default_body_secs")]
    pub(crate) body_read_timeout_secs: u64,
    /// Requests handled at once (probes not counted); more get 503 with `Retry-After: 1`.
    #[serde(default = "default_in_flight")]
    pub(crate) max_in_flight: usize,
    /// Open connections; past this, new ones wait in the listen backlog.
    #[serde(default = "default_connections")]
    pub(crate) max_connections: usize,
    /// `/livez` fails when a background loop has not turned for this many seconds. Keep it
    /// above the longest housekeeping pass (planning a large wave).
    #[serde(default = "default_stall")]
    pub(crate) liveness_stall_secs: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            header_read_timeout_secs: default_header_secs(),
            body_read_timeout_secs: default_body_secs(),
            max_in_flight: default_in_flight(),
            max_connections: default_connections(),
            liveness_stall_secs: default_stall(),
        }
    }
}

impl HttpSection {
    /// The server's limits; `shutdown_grace` is the `run --shutdown-grace` the engine gets too.
    pub(crate) fn limits(&self, shutdown_grace: std::time::Duration) -> api::Limits {
        use std::time::Duration;
        api::Limits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs.max(1)),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs.max(1)),
            max_in_flight: self.max_in_flight.max(1),
            max_connections: self.max_connections.max(1),
            shutdown_grace,
            stall_after: Duration::from_secs(self.liveness_stall_secs.max(1)),
        }
    }
}

fn default_header_secs() -> u64 {
    30
}
fn default_body_secs() -> u64 {
    30
}
fn default_in_flight() -> usize {
    512
}
fn default_connections() -> usize {
    8192
}
fn default_stall() -> u64 {
    300
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            batch_size: default_batch(),
            lease_secs: default_lease(),
            max_attempts: None,
            retry_base_secs: default_retry(),
            retry_max_secs: default_retry_max(),
            breaker_threshold: default_breaker_threshold(),
            breaker_cool_down_secs: default_breaker_cool_down(),
            task_digest_every_secs: default_task_digest_every(),
            poll_ms: default_poll(),
            dispatchers_per_channel: default_dispatchers(),
        }
    }
}

fn default_db() -> String {
    "sqlite://campaignd.db".into()
}
fn default_workflows() -> PathBuf {
    "workflows".into()
}
fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_email() -> channels::email::EmailConfig {
    channels::email::EmailConfig::File { dir: "mail".into() }
}
fn default_from() -> String {
    "campaignd@localhost".into()
}
fn default_batch() -> u64 {
    500
}
fn default_lease() -> u64 {
    60
}
fn default_retry_max() -> u64 {
    60
}
fn default_breaker_threshold() -> u32 {
    5
}
fn default_breaker_cool_down() -> u64 {
    10
}
fn default_task_digest_every() -> u64 {
    3600
}
fn default_retry() -> u64 {
    30
}
fn default_poll() -> u64 {
    250
}
fn default_dispatchers() -> usize {
    1
}

impl Config {
    /// Reads the file, or the defaults when `path` is `None`.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config {}", p.display()))?,
            None => String::new(),
        };
        let shown = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into());
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{shown}: {e}"))
    }
}
