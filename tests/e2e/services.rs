//! The real services of e2e tests: a private Kannel (scripts/kannel.sh) and a real SMTP
//! server (scripts/smtp.sh). Each instance lives in a temp dir of its own, on ports chosen
//! for this run, and is stopped when its handle drops, so a leftover from a killed run (its
//! dir and ports are its own) cannot break the next run. A missing binary makes the scripts
//! fail, and with them the test: never a skip, under CI or not.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::helpers;

/// Cargo sets CARGO_PKG_NAME for test processes: used as the Kannel sendsms password and the
/// SMTP user, the tests configure secrets by variable name without mutating the environment.
pub(crate) const SECRET_ENV: &str = "CARGO_PKG_NAME";
/// A second variable cargo sets, for the SMTP password (its value differs from SECRET_ENV's,
/// which makes SECRET_ENV a wrong password).
pub(crate) const SMTP_PASSWORD_ENV: &str = "CARGO_PKG_VERSION";

const KANNEL_ADMIN_PASSWORD: &str = "e2e-admin";
const KANNEL_STATUS_PASSWORD: &str = "e2e-status";
/// A port picked free can be taken by someone else before Kannel binds it.
const START_ATTEMPTS: usize = 5;

pub(crate) fn env_secret(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("cargo sets {var} for test processes"))
}

/// Ports nobody listens on right now, all different (the listeners are held together).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `deadline`.
pub(crate) async fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_for`] with a condition that has to await (e.g. reads the store).
pub(crate) async fn until<T, Fut>(
    what: &str,
    deadline: Duration,
    mut cond: impl FnMut() -> Fut,
) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One private Kannel: bearerbox, smsbox and fakesmsc as the operator's SMSC.
pub(crate) struct Kannel {
    dir: tempfile::TempDir,
    pub(crate) admin_port: u16,
    pub(crate) box_port: u16,
    pub(crate) smsc_port: u16,
    pub(crate) sendsms_port: u16,
    callback_base: String,
    mo_token: String,
    /// Kannel tests are heavy: none runs beside another heavy test (released after the stop).
    _heavy: helpers::Heavy,
}

impl Kannel {
    /// Starts Kannel on free ports; MO goes to `<callback_base>/callbacks/kannel/mo`.
    /// `mo_token`: campaignd's gateway token, which Kannel's get-url carries.
    pub(crate) fn start(callback_base: &str, mo_token: &str) -> Kannel {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            // Before the ports: a wait for the lock would let others take them.
            let heavy = helpers::heavy();
            let ports = free_ports(4);
            let kannel = Kannel {
                dir: tempfile::Builder::new()
                    .prefix("campaignd-e2e-kannel-")
                    .tempdir()
                    .expect("temp dir"),
                admin_port: ports[0],
                box_port: ports[1],
                smsc_port: ports[2],
                sendsms_port: ports[3],
                callback_base: callback_base.to_owned(),
                mo_token: mo_token.to_owned(),
                _heavy: heavy,
            };
            let out = kannel.script(&["start"]);
            if out.status.success() {
                return kannel;
            }
            last = describe(&out);
            assert!(
                !last.contains("missing dependency"),
                "Kannel is required for this test (run scripts/install-deps.sh):\n{last}"
            );
            // Probably a port taken between the probe and the start: the drop stops whatever
            // started, and the next attempt uses other ports and another dir.
        }
        panic!("Kannel did not start in {START_ATTEMPTS} attempts; the last:\n{last}");
    }

    /// A Kannel whose callbacks go to a daemon that will listen on the returned address
    /// (fixed before the daemon starts, since kannel.conf names it), with a gateway token
    /// of `store` for the MO callback.
    pub(crate) async fn for_daemon(store: &store::Store) -> (std::net::SocketAddr, Kannel) {
        let listen = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let kannel = Kannel::start(
            &format!("http://{listen}"),
            &helpers::gateway_token(store).await,
        );
        (listen, kannel)
    }

    pub(crate) fn sendsms_url(&self) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/sendsms", self.sendsms_port)
    }

    fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(helpers::repo_root().join("scripts/kannel.sh"))
            .args(args)
            .env("KANNEL_DIR", self.dir.path())
            .env("KANNEL_ADMIN_PORT", self.admin_port.to_string())
            .env("KANNEL_BOX_PORT", self.box_port.to_string())
            .env("KANNEL_SMSC_PORT", self.smsc_port.to_string())
            .env("KANNEL_SENDSMS_PORT", self.sendsms_port.to_string())
            .env("KANNEL_ADMIN_PASSWORD", KANNEL_ADMIN_PASSWORD)
            .env("KANNEL_STATUS_PASSWORD", KANNEL_STATUS_PASSWORD)
            .env("CAMPAIGND_KANNEL_PASSWORD", env_secret(SECRET_ENV))
            .env("CAMPAIGND_CALLBACK_URL", &self.callback_base)
            .env("CAMPAIGND_MO_TOKEN", &self.mo_token)
            // A loaded two-core machine can be slow to bring the boxes up.
            .env("KANNEL_START_TIMEOUT", "60")
            .output()
            .expect("run scripts/kannel.sh")
    }

    /// Runs scripts/kannel.sh with this instance's settings; panics unless it succeeds.
    pub(crate) fn run(&self, args: &[&str]) {
        let out = self.script(args);
        assert!(
            out.status.success(),
            "scripts/kannel.sh {args:?} failed: {}",
            describe(&out)
        );
    }

    /// A subscriber's reply typed at the fake SMSC (non-ASCII goes as UCS-2).
    pub(crate) fn mo(&self, from: &str, to: &str, text: &str) {
        self.run(&["mo", from, to, text]);
    }

    /// Whether smsbox's sendsms port takes a TCP connection (refused: smsbox died, or it
    /// lost its listener while running).
    pub(crate) fn sendsms_accepts(&self) -> bool {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.sendsms_port));
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
    }

    /// What a service manager does when sendsms stops answering: smsbox restarted when
    /// bearerbox still runs (bearerbox and its store untouched), else the whole Kannel
    /// (smsbox closes its sendsms port while it has no bearerbox; the store keeps what was
    /// queued). Returns what was seen first, for the test to report.
    pub(crate) fn revive(&self) -> String {
        let bearerbox = alive(self.pid("bearerbox"));
        let smsbox = alive(self.pid("smsbox"));
        let errors = |file: &str| -> String {
            let log = self.log(file);
            let bad: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("PANIC") || (l.contains("ERROR") && !l.contains("Couldn't fetch"))
                })
                .collect();
            bad[bad.len().saturating_sub(10)..].join("\n")
        };
        let tail = |file: &str| -> String {
            let log = self.log(file);
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(10)..].join("\n")
        };
        let seen = format!(
            "bearerbox running: {bearerbox}, smsbox running: {smsbox}\n\
             bearerbox.log PANIC/ERROR:\n{}\nbearerbox.out:\n{}\n\
             smsbox.log PANIC/ERROR (failed callbacks left out):\n{}\nsmsbox.out:\n{}",
            errors("bearerbox.log"),
            tail("bearerbox.out"),
            errors("smsbox.log"),
            tail("smsbox.out"),
        );
        if bearerbox {
            self.run(&["restart-smsbox"]);
        } else {
            self.run(&["restart"]);
        }
        seen
    }

    /// The PID a box recorded for itself.
    pub(crate) fn pid(&self, name: &str) -> u32 {
        let path = self.dir.path().join("run").join(format!("{name}.pid"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("pid in {}: {e}", path.display()))
    }

    pub(crate) fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("logs").join(file)).unwrap_or_default()
    }

    /// The MT messages fakesmsc received, as `<from> <to> <type> <data>` in arrival order,
    /// across restarts (each start keeps the last log as `fakesmsc.log.<start time>`).
    pub(crate) fn delivered(&self) -> Vec<String> {
        let mut rotated: Vec<String> = std::fs::read_dir(self.dir.path().join("logs"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("fakesmsc.log."))
                    .collect()
            })
            .unwrap_or_default();
        rotated.sort();
        let text: String = rotated
            .iter()
            .map(|n| self.log(n))
            .chain(std::iter::once(self.log("fakesmsc.log")))
            .collect();
        text.lines()
            .filter_map(|l| {
                let rest = &l[l.find("DEBUG: Got message ")? + "DEBUG: Got message ".len()..];
                let body = &rest[rest.find(": <")? + 3..];
                Some(body.strip_suffix('>').unwrap_or(body).to_owned())
            })
            .collect()
    }

    /// GET on bearerbox's admin HTTP, e.g. `status.txt` or `stop-smsc?smsc=FAKE`.
    pub(crate) async fn admin(&self, path: &str) -> (u16, String) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let password = if path.starts_with("status") {
            KANNEL_STATUS_PASSWORD
        } else {
            KANNEL_ADMIN_PASSWORD
        };
        let url = format!(
            "http://127.0.0.1:{}/{path}{sep}password={password}",
            self.admin_port
        );
        let res = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("Kannel admin {path}: {e}"));
        let status = res.status().as_u16();
        (status, res.text().await.unwrap_or_default())
    }

    /// The state bearerbox reports for the FAKE SMSC (`online`, `re-connecting`, `dead`, ...).
    pub(crate) async fn fake_smsc_state(&self) -> String {
        let (_, status) = self.admin("status.txt").await;
        status
            .lines()
            .find(|l| l.trim_start().starts_with("FAKE[FAKE]"))
            .and_then(|l| {
                Some(
                    l[l.find('(')? + 1..]
                        .split([',', ' ', ')'])
                        .next()?
                        .to_owned(),
                )
            })
            .unwrap_or_default()
    }
}

impl Drop for Kannel {
    fn drop(&mut self) {
        // The logs go with the temporary directory: show what tells why when a test failed.
        // The noisy fakesmsc log first: a CI summary keeps only the end of the output.
        if std::thread::panicking() {
            for (file, n) in [
                ("fakesmsc.log", 10),
                ("bearerbox.log", 40),
                ("smsbox.log", 40),
                ("bearerbox.out", 20),
                ("smsbox.out", 20),
            ] {
                let log = self.log(file);
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(n)..].join("\n");
                eprintln!("--- Kannel {file}, last {n} lines ---\n{tail}");
            }
            for file in ["bearerbox.log", "smsbox.log"] {
                let log = self.log(file);
                let bad: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("PANIC") || l.contains("ERROR"))
                    .collect();
                let last = bad[bad.len().saturating_sub(20)..].join("\n");
                eprintln!(
                    "--- Kannel {file}: {} PANIC/ERROR lines, the last ---\n{last}",
                    bad.len()
                );
            }
            eprintln!(
                "--- scripts/kannel.sh status ---\n{}",
                describe(&self.script(&["status"]))
            );
        }
        let out = self.script(&["stop"]);
        if !out.status.success() {
            eprintln!("scripts/kannel.sh stop failed: {}", describe(&out));
        }
    }
}

/// Sends a signal to a process of ours (a box this test started).
pub(crate) fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid}");
}

/// /proc/<pid>/stat state, if the process exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with(['Z', 'X']))
        })
        .unwrap_or(false)
}

/// How the SMTP server is set up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SmtpSetup {
    /// Offer (and require) STARTTLS with a certificate from a throwaway CA.
    pub(crate) starttls: bool,
    /// Require AUTH as user `$SECRET_ENV` with password `$SMTP_PASSWORD_ENV`.
    pub(crate) auth: bool,
    /// Refuse RCPT to every address at this domain with 550 (a permanent bounce).
    pub(crate) reject_domain: Option<&'static str>,
}

/// One real SMTP server (aiosmtpd) storing what it accepts in a maildir.
pub(crate) struct Smtp {
    dir: tempfile::TempDir,
    pub(crate) port: u16,
}

impl Smtp {
    pub(crate) fn start(setup: SmtpSetup) -> Smtp {
        let dir = tempfile::Builder::new()
            .prefix("campaignd-e2e-smtp-")
            .tempdir()
            .expect("temp dir");
        let mut smtp = Smtp { dir, port: 0 };
        let mut c = smtp.command("start");
        // Port 0: the server binds a free port itself and reports it, so nothing can race.
        c.env("SMTP_PORT", "0")
            .env("SMTP_TLS", if setup.starttls { "starttls" } else { "none" });
        if setup.auth {
            c.env("SMTP_USER", env_secret(SECRET_ENV))
                .env("SMTP_PASSWORD", env_secret(SMTP_PASSWORD_ENV));
        } else {
            c.env_remove("SMTP_USER").env_remove("SMTP_PASSWORD");
        }
        match setup.reject_domain {
            Some(d) => c.env("SMTP_REJECT_DOMAIN", d),
            None => c.env_remove("SMTP_REJECT_DOMAIN"),
        };
        let out = c.output().expect("run scripts/smtp.sh");
        assert!(
            out.status.success(),
            "the SMTP server is required for this test (run scripts/install-deps.sh): {}",
            describe(&out)
        );
        let out = smtp.command("port").output().expect("run scripts/smtp.sh");
        assert!(out.status.success(), "smtp.sh port: {}", describe(&out));
        smtp.port = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("smtp.sh port prints the port");
        smtp
    }

    fn command(&self, arg: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(helpers::repo_root().join("scripts/smtp.sh"))
            .arg(arg)
            .env("SMTP_DIR", self.dir.path());
        c
    }

    /// The throwaway CA that signed the server's certificate (STARTTLS servers only).
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// Client settings for this server over STARTTLS with AUTH: the user name from
    /// [`SECRET_ENV`], the password from `password_env`, trusting the server's CA when
    /// `ca_file`.
    pub(crate) fn starttls_config(
        &self,
        password_env: &str,
        ca_file: bool,
    ) -> channels::email::EmailConfig {
        channels::email::EmailConfig::Smtp {
            host: "127.0.0.1".into(),
            port: self.port,
            tls: channels::email::SmtpTls::Starttls,
            ca_file: ca_file.then(|| self.ca_file()),
            username_env: Some(SECRET_ENV.into()),
            password_env: Some(password_env.into()),
        }
    }

    /// Every message the server stored, headers included.
    pub(crate) fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.dir.path().join("maildir").join(sub)) {
                for e in rd.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    /// The server's log: one line per AUTH attempt and per stored message.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("smtp.log")).unwrap_or_default()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.command("stop").output();
    }
}

/// A PostgreSQL server of the test's own (initdb in a temporary folder, its own port), which
/// the test may stop and start: the machine's server is shared with every other test.
/// PostgreSQL refuses to run as root, so the cluster belongs to the `postgres` user.
pub(crate) struct PrivatePg {
    dir: tempfile::TempDir,
    pub(crate) port: u16,
    bin: PathBuf,
}

impl PrivatePg {
    pub(crate) fn start() -> PrivatePg {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).max())
            .filter(|b| b.join("initdb").exists())
            .expect(
                "PostgreSQL server binaries under /usr/lib/postgresql/*/bin (package postgresql)",
            );
        let dir = tempfile::Builder::new()
            .prefix("campaignd-e2e-pg-")
            .tempdir()
            .expect("temp dir");
        let owner = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .expect("id -u postgres");
        let uid: u32 = String::from_utf8_lossy(&owner.stdout)
            .trim()
            .parse()
            .expect("the postgres user");
        std::os::unix::fs::chown(dir.path(), Some(uid), None).expect("chown the cluster folder");
        let pg = PrivatePg {
            port: free_ports(1)[0],
            dir,
            bin,
        };
        pg.as_postgres(&[
            "initdb",
            "-D",
            &pg.data(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn as_postgres(&self, args: &[&str]) {
        let exe = self.bin.join(args[0]);
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(exe)
            .args(&args[1..])
            .output()
            .expect("runuser");
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
    }

    /// Starts the server and waits until it takes connections.
    pub(crate) fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").display().to_string();
        self.as_postgres(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-o",
            &opts,
            "-l",
            &log,
            "-w",
            "-t",
            "60",
            "start",
        ]);
    }

    /// Stops the server (fast: open sessions are cut, as in a crash of the network path).
    pub(crate) fn down(&self) {
        self.as_postgres(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "stop",
        ]);
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}
