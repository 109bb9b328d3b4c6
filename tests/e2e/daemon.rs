//! Real `campaignd run` processes for the crash, replica and shutdown tests: config files,
//! spawning, the listen line, SIGKILL and SIGTERM, output captured by the test (shown when it
//! fails), and a guard that never leaves a daemon behind; a loopback
//! `sendsms` gateway that records every request by idempotency key and by sender; and small
//! SQL helpers to look at what the daemons stored.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use sea_orm::{ConnectionTrait, QueryResult, Statement};
use store::testing::RawDb as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{oneshot, watch};

/// Environment variable that carries the gateway password to the daemons (set with
/// `Command::env`, never in the test process).
pub(crate) const PASSWORD_ENV: &str = "CAMPAIGND_TEST_SENDSMS_PASSWORD";
/// The password the loopback gateway accepts.
pub(crate) const PASSWORD: &str = "loopback-secret";

/// The `campaignd` program of this very build: the `campaignd-under-test` binary of this
/// package (tests/src/bin), which Cargo builds before it runs these tests and names here.
pub(crate) fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_campaignd-under-test"))
}

/// The parts of campaignd's TOML config these tests vary.
#[derive(Debug, Clone)]
pub(crate) struct DaemonConfig {
    pub(crate) database_url: String,
    pub(crate) database_schema: Option<String>,
    pub(crate) workflows: PathBuf,
    pub(crate) worker_id: String,
    pub(crate) batch_size: u64,
    pub(crate) lease_secs: u64,
    pub(crate) poll_ms: u64,
    pub(crate) sendsms_url: String,
    /// Goes to the gateway with every message: the gateway records it, so a test knows
    /// which daemon (or which life of a daemon) sent what.
    pub(crate) sms_username: String,
    pub(crate) concurrency: usize,
    pub(crate) mail_dir: PathBuf,
    /// Sends through a real Kannel (its `campaignd` account) with delivery reports coming
    /// back to the daemon's own API, instead of the loopback gateway.
    pub(crate) real_kannel: Option<RealKannel>,
}

/// What a daemon needs to work with a real Kannel ([`crate::services::Kannel`]).
#[derive(Debug, Clone)]
pub(crate) struct RealKannel {
    /// The API's address, fixed across daemon lives: Kannel calls the dlr-urls of messages
    /// an earlier life sent.
    pub(crate) listen: SocketAddr,
    /// `[sms] ack_grace_ms`.
    pub(crate) ack_grace_ms: u64,
}

impl DaemonConfig {
    /// A daemon sending campaign `name` (a blast workflow written under `dir`) through the
    /// real `kannel` with its API on `listen`: batches of 20, 2 requests in flight, a 10 s
    /// lease and proof grace, polling every 100 ms. Tests change what they vary.
    pub(crate) fn on_real_kannel(
        database: (String, Option<String>),
        dir: &Path,
        name: &str,
        kannel: &crate::services::Kannel,
        listen: SocketAddr,
    ) -> DaemonConfig {
        DaemonConfig {
            database_url: database.0,
            database_schema: database.1,
            workflows: blast_workflows(dir, name),
            worker_id: name.into(),
            batch_size: 20,
            lease_secs: 10,
            poll_ms: 100,
            sendsms_url: kannel.sendsms_url(),
            sms_username: "campaignd".into(),
            concurrency: 2,
            mail_dir: dir.join("mail"),
            real_kannel: Some(RealKannel {
                listen,
                ack_grace_ms: 10_000,
            }),
        }
    }

    /// Writes the config file; strings are written as TOML basic strings.
    pub(crate) fn write(&self, path: &Path) {
        let mut s = String::new();
        let q = |v: &str| format!("{v:?}");
        let p = |v: &Path| format!("{:?}", v.display().to_string());
        writeln!(s, "database_url = {}", q(&self.database_url)).unwrap();
        if let Some(schema) = &self.database_schema {
            writeln!(s, "database_schema = {}", q(schema)).unwrap();
        }
        writeln!(s, "workflows = {}", p(&self.workflows)).unwrap();
        match &self.real_kannel {
            Some(k) => writeln!(s, "listen = \"{}\"", k.listen).unwrap(),
            None => writeln!(s, "listen = \"127.0.0.1:0\"").unwrap(),
        }
        writeln!(s, "worker_id = {}", q(&self.worker_id)).unwrap();
        writeln!(s, "\n[engine]").unwrap();
        writeln!(s, "batch_size = {}", self.batch_size).unwrap();
        writeln!(s, "lease_secs = {}", self.lease_secs).unwrap();
        writeln!(s, "max_attempts = 8").unwrap();
        writeln!(s, "retry_base_secs = 1").unwrap();
        writeln!(s, "poll_ms = {}", self.poll_ms).unwrap();
        writeln!(s, "\n[sms]").unwrap();
        writeln!(s, "transport = \"http\"").unwrap();
        writeln!(s, "sendsms_url = {}", q(&self.sendsms_url)).unwrap();
        match &self.real_kannel {
            Some(k) => {
                // Kannel's account; its password is in the variable the Kannel harness
                // renders into kannel.conf.
                writeln!(s, "username = \"campaignd\"").unwrap();
                writeln!(s, "password_env = {}", q(crate::services::SECRET_ENV)).unwrap();
                writeln!(s, "from = \"10086\"").unwrap();
                writeln!(
                    s,
                    "dlr_url = \"http://{}/callbacks/kannel/dlr\"\ndlr_mask = 27",
                    k.listen
                )
                .unwrap();
                writeln!(s, "ack_grace_ms = {}", k.ack_grace_ms).unwrap();
            }
            None => {
                writeln!(s, "username = {}", q(&self.sms_username)).unwrap();
                writeln!(s, "password_env = {}", q(PASSWORD_ENV)).unwrap();
                writeln!(s, "from = \"10086\"").unwrap();
                // No delivery reports come back in these tests (the gateway only counts), but
                // the dlr-url must be there: it carries the idempotency key.
                writeln!(
                    s,
                    "dlr_url = \"http://127.0.0.1:9/callbacks/kannel/dlr\"\ndlr_mask = 27"
                )
                .unwrap();
            }
        }
        writeln!(s, "concurrency = {}", self.concurrency).unwrap();
        writeln!(s, "timeout_ms = 5000").unwrap();
        writeln!(s, "\n[email]").unwrap();
        writeln!(s, "transport = \"file\"").unwrap();
        writeln!(s, "dir = {}", p(&self.mail_dir)).unwrap();
        // Beside the mail folder, in the test's own temporary directory.
        writeln!(s, "\n[callbacks]").unwrap();
        writeln!(
            s,
            "spool_dir = {}",
            p(&self.mail_dir.with_file_name("spool"))
        )
        .unwrap();
        std::fs::write(path, s).unwrap();
    }
}

/// The daemons' `CAMPAIGND_CALLBACK_SECRET` (they refuse to start without one).
pub(crate) const CALLBACK_SECRET_ENV: &str = "CAMPAIGND_CALLBACK_SECRET";

/// Approves the version of `campaign` in the config's workflows folder as a principal of its
/// own with the approver role (the loader is the config's operator, `files`): the daemon
/// starts runs of approved versions only.
pub(crate) async fn approve(config: &Path, campaign: &str) {
    let name = format!("approver-{campaign}");
    let token = cli(
        config,
        &["token", "create", "--name", &name, "--role", "approver"],
    )
    .await;
    cli_env(
        config,
        &["approve", campaign],
        &[("CAMPAIGND_TOKEN", token.trim())],
    )
    .await;
}

/// Runs a one-shot `campaignd` command (e.g. `trigger`) and returns its standard output.
pub(crate) async fn cli(config: &Path, args: &[&str]) -> String {
    cli_env(config, args, &[]).await
}

/// [`cli`] with extra environment variables.
pub(crate) async fn cli_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tokio::process::Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .env(PASSWORD_ENV, PASSWORD)
        .env(CALLBACK_SECRET_ENV, crate::helpers::CALLBACK_SECRET)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run campaignd");
    assert!(
        out.status.success(),
        "campaignd {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `campaignd run` child process. Dropping it SIGKILLs the process (`kill_on_drop`), so a
/// failing test leaves no daemon behind; `--exit-after` bounds its life even if this test
/// process itself is killed. Its stdout and stderr are read to the end by the test and kept:
/// failure messages quote them, and a test that panics prints the tail of both.
pub(crate) struct Daemon {
    pub(crate) name: String,
    child: tokio::process::Child,
    listen: watch::Receiver<Option<SocketAddr>>,
    output: Output,
}

/// Everything a daemon wrote, line by line, in arrival order per stream.
#[derive(Clone, Default)]
pub(crate) struct Output {
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Output {
    fn tail(lines: &Mutex<Vec<String>>, n: usize) -> String {
        let lines = lines.lock().unwrap();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// How to start a daemon; [`Daemon::spawn`] has the defaults of the crash and replica tests.
pub(crate) struct Spawn<'a> {
    pub(crate) name: &'a str,
    pub(crate) config: &'a Path,
    /// `--log` filter.
    pub(crate) log: &'a str,
    /// `--shutdown-grace` in seconds.
    pub(crate) grace_secs: u64,
}

impl Daemon {
    /// Starts `campaignd run --config CONFIG` with warnings and the engine's info lines.
    pub(crate) fn spawn(name: &str, config: &Path) -> Daemon {
        Daemon::start(Spawn {
            name,
            config,
            log: "warn,engine=info",
            grace_secs: 1,
        })
    }

    pub(crate) fn start(how: Spawn<'_>) -> Daemon {
        let mut child = tokio::process::Command::new(binary())
            .args(["run", "--exit-after", "600"])
            .arg("--shutdown-grace")
            .arg(how.grace_secs.to_string())
            .arg("--config")
            .arg(how.config)
            .arg("--log")
            .arg(how.log)
            .env(PASSWORD_ENV, PASSWORD)
            .env(CALLBACK_SECRET_ENV, crate::helpers::CALLBACK_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn campaignd run");
        let output = Output::default();
        let (tx, rx) = watch::channel(None);
        // Both pipes are read to their end, so the daemon never blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let lines_out = output.stdout.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("campaignd listening on http://") {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    if let Ok(addr) = addr.parse() {
                        let _ = tx.send(Some(addr));
                    }
                }
                lines_out.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let lines_err = output.stderr.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                lines_err.lock().unwrap().push(line);
            }
        });
        Daemon {
            name: how.name.to_owned(),
            child,
            listen: rx,
            output,
        }
    }

    /// Waits for the `campaignd listening on http://ADDR` line.
    pub(crate) async fn listening(&mut self, within: Duration) -> SocketAddr {
        let res = tokio::time::timeout(within, self.listen.wait_for(|a| a.is_some()))
            .await
            .ok()
            .and_then(|r| r.ok().map(|addr| *addr));
        match res {
            Some(addr) => addr.expect("checked by wait_for"),
            None => panic!(
                "{} did not print its listen line within {within:?}; its stderr:\n{}",
                self.name,
                self.stderr_tail(40)
            ),
        }
    }

    /// Whether the process has exited (and, if so, how).
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// SIGKILL, then reap. Panics when the daemon had already exited on its own: every kill
    /// in these tests must hit a live daemon.
    pub(crate) async fn kill9(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited by itself ({status}) before the test killed it; its stderr:\n{}",
                self.name,
                self.stderr_tail(40)
            );
        }
        self.child.kill().await.expect("SIGKILL");
        let status = self.child.wait().await.expect("wait");
        assert_eq!(
            status.signal(),
            Some(9),
            "{} was expected to die of SIGKILL, got {status}",
            self.name
        );
    }

    /// SIGTERM (the graceful stop), then waits up to `within` for the exit.
    pub(crate) async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().expect("the daemon is running");
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!(
                "{} did not exit within {within:?} of SIGTERM; its stderr:\n{}",
                self.name,
                self.stderr_tail(40)
            ),
        }
    }

    /// The last `n` lines of the daemon's stderr (for failure messages).
    pub(crate) fn stderr_tail(&self, n: usize) -> String {
        Output::tail(&self.output.stderr, n)
    }

    /// The whole stderr of the daemon so far.
    pub(crate) fn stderr(&self) -> String {
        self.output.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // kill_on_drop also does this; being explicit costs nothing.
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            // The test harness shows this with the failure (it captures the test's stderr).
            eprintln!(
                "--- {}: last lines of stdout ---\n{}\n--- {}: last lines of stderr ---\n{}",
                self.name,
                Output::tail(&self.output.stdout, 20),
                self.name,
                Output::tail(&self.output.stderr, 60)
            );
        }
    }
}

/// A loopback stand-in for Kannel's `sendsms` that only counts: every request is recorded
/// under its idempotency key (taken from the `dlr-url`) with the `username` that sent it, in
/// arrival order; it answers `202 0: Accepted for delivery` and calls nothing back.
#[derive(Clone)]
pub(crate) struct CountingGateway {
    pub(crate) addr: SocketAddr,
    inner: Arc<Mutex<GwInner>>,
}

#[derive(Default)]
struct GwInner {
    by_key: HashMap<String, Vec<String>>,
    by_user: HashMap<String, u64>,
    trap: Option<Trap>,
}

/// Stalls one request: the `nth` from `user` is recorded, reported to the test, and not
/// answered for a minute, so its sender is certainly mid-batch when the test kills it.
struct Trap {
    user: String,
    nth: u64,
    fired: oneshot::Sender<String>,
}

impl CountingGateway {
    pub(crate) async fn start() -> CountingGateway {
        let inner = Arc::new(Mutex::new(GwInner::default()));
        let app = axum::Router::new()
            .route("/cgi-bin/sendsms", get(count_sendsms))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        CountingGateway { addr, inner }
    }

    pub(crate) fn sendsms_url(&self) -> String {
        format!("http://{}/cgi-bin/sendsms", self.addr)
    }

    /// Distinct keys seen so far.
    pub(crate) fn distinct(&self) -> usize {
        self.inner.lock().unwrap().by_key.len()
    }

    /// Requests per sender (`username`) so far.
    pub(crate) fn per_user(&self) -> HashMap<String, u64> {
        self.inner.lock().unwrap().by_user.clone()
    }

    /// Every key with the senders of its requests, in arrival order.
    pub(crate) fn snapshot(&self) -> HashMap<String, Vec<String>> {
        self.inner.lock().unwrap().by_key.clone()
    }

    /// Arms a [`Trap`] on the `nth` request from `user`; the receiver gets its key.
    pub(crate) fn trap(&self, user: &str, nth: u64) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        self.inner.lock().unwrap().trap = Some(Trap {
            user: user.to_owned(),
            nth,
            fired: tx,
        });
        rx
    }
}

async fn count_sendsms(
    State(inner): State<Arc<Mutex<GwInner>>>,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, &'static str) {
    if q.get("password").map(String::as_str) != Some(PASSWORD) {
        return (StatusCode::FORBIDDEN, "Authorization failed for sendsms");
    }
    if q.get("to").is_none_or(|t| t.is_empty()) {
        return (StatusCode::BAD_REQUEST, "Missing receiver number, rejected");
    }
    let key = q
        .get("dlr-url")
        .and_then(|d| url::Url::parse(d).ok())
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "key")
                .map(|(_, v)| v.into_owned())
        });
    let Some(key) = key else {
        return (StatusCode::BAD_REQUEST, "no key in dlr-url");
    };
    let user = q.get("username").cloned().unwrap_or_default();
    let stall = {
        let mut g = inner.lock().unwrap();
        g.by_key.entry(key.clone()).or_default().push(user.clone());
        let n = {
            let n = g.by_user.entry(user.clone()).or_default();
            *n += 1;
            *n
        };
        let hit = g
            .trap
            .as_ref()
            .is_some_and(|t| t.user == user && t.nth == n);
        if hit && let Some(trap) = g.trap.take() {
            let _ = trap.fired.send(key);
        }
        hit
    };
    if stall {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    (StatusCode::ACCEPTED, "0: Accepted for delivery")
}

/// The seed of a test's random choices (testkit's rule: `CAMPAIGND_TEST_SEED` if set, a fixed
/// one under `CI=true`, else random), printed with how to repeat it.
pub(crate) fn test_seed(what: &str) -> u64 {
    testkit::seed("CAMPAIGND_TEST_SEED", what)
}

/// Runs a query written for both backends (no placeholders) and returns its rows.
pub(crate) async fn rows(store: &store::Store, sql: &str) -> Vec<QueryResult> {
    let db = store.db();
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The integer column `n` of the query's one row (`COUNT(*) AS n` and the like; NULL is 0).
pub(crate) async fn scalar(store: &store::Store, sql: &str) -> i64 {
    let rows = rows(store, sql).await;
    let row = rows.first().unwrap_or_else(|| panic!("{sql}: no row"));
    row.try_get::<Option<i64>>("", "n")
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or(0)
}

/// Waits until no PostgreSQL session of worker `worker` is left (30 s at most). A killed
/// daemon's statement the server had already received still runs and commits after the kill
/// (the server notices the dead client only when it answers), so a test that reads what the
/// victim left must wait for this first. Nothing to wait for on SQLite, whose writes die
/// with the process.
pub(crate) async fn sessions_gone(store: &store::Store, worker: &str) {
    if store.db().get_database_backend() != sea_orm::DbBackend::Postgres {
        return;
    }
    let name = store::application_name(worker).replace('\'', "''");
    let sql =
        format!("SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = '{name}'");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = scalar(store, &sql).await;
        if n == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} PostgreSQL sessions of {worker} are still open 30 s after it was killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Contacts by state, e.g. `{"sent": 49500, "sending": 500}` (`sending`: under a lease).
pub(crate) async fn states(store: &store::Store) -> HashMap<String, i64> {
    store
        .state_counts(None)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v as i64))
        .collect()
}

/// A workflows folder (under `dir`) with one campaign, `campaign`: a single SMS wave to every
/// subscriber, with windows long enough that the run stays open while a test counts.
/// Returns the folder.
pub(crate) fn blast_workflows(dir: &Path, campaign: &str) -> PathBuf {
    let workflows = dir.join("workflows");
    std::fs::create_dir_all(workflows.join("templates")).unwrap();
    std::fs::write(
        workflows.join("segments.yaml"),
        "segments:\n  everyone:\n    where: \"tenure_months >= 0\"\n",
    )
    .unwrap();
    std::fs::write(
        workflows.join("templates/blast.txt"),
        "{name}, your autumn data bonus is ready.",
    )
    .unwrap();
    let wf = format!(
        "campaign: {campaign}\ntimezone: Asia/Shanghai\naudience:\n  segment: everyone\nwaves:\n  \
         - id: sms_blast\n    channel: sms\n    template: templates/blast.txt\n    \
         respond_within: 30d\n    send_within: 30d\n"
    );
    std::fs::write(workflows.join(format!("{campaign}.yaml")), wf).unwrap();
    workflows
}

/// `n` synthetic subscribers (seeded), none opted out, so the `everyone` segment of
/// [`blast_workflows`] targets each of them.
pub(crate) async fn insert_everyone(store: &store::Store, n: usize, seed: u64) {
    let base: Vec<_> = subscribers::generate(&catalogue::shipped(), n, seed)
        .map(|mut s| {
            s.opt_out = false;
            s
        })
        .collect();
    assert!(
        base.iter()
            .all(|s| matches!(s.get("tenure_months"), Some(catalogue::Value::Int(m)) if m >= 0)),
        "the `everyone` segment must match the whole base"
    );
    store
        .insert_subscribers(
            &base,
            store::subscribers::OnDuplicate::Fail,
            store::wall_now(),
        )
        .await
        .unwrap();
}
