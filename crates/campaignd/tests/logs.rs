//! Phone numbers never reach the logs in full: the real binary, at debug level for every
//! target, through the flows that log about numbers (an import refused for numbers already in
//! the base, sends the gateway refuses or defers, an opt-out by SMS reply "TD", a reply, a
//! message from an unknown number). Everything the processes write is captured and searched
//! for every number of the base; the masked form must show up, so the test cannot pass by
//! logging nothing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Every target at debug: the product's debug lines about numbers, and whatever the libraries
/// (HTTP client and server, SQL driver) would print about the requests that carry them.
const LOG: &str = "debug";
/// A number that is nobody's in the base (the telco mapping gives every customer a 139 number).
const UNKNOWN: &str = "13700001234";
const WORKFLOW: &str = r#"
campaign: log-check
timezone: Asia/Shanghai
audience:
  segment: everyone
waves:
  - id: sms
    channel: sms
    template: templates/offer.txt
    respond_within: 30d
    send_within: 30d
    responses:
      - reply: "1"
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Everything the processes of this test wrote, stdout and stderr.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn push(&self, who: &str, text: &str) {
        let mut all = self.0.lock().unwrap();
        for line in text.lines() {
            all.push_str(who);
            all.push_str(": ");
            all.push_str(line);
            all.push('\n');
        }
    }
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// The daemon's delivery-report signing secret (it does not start without one).
const CALLBACK_SECRET: &str = "logs-test-callback-secret-0123456789";

/// A principal's token from `campaignd token create` (its stdout is the token alone).
async fn create_token(config: &Path, name: &str, role: &str) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_campaignd"))
        .args([
            "token", "create", "--name", name, "--role", role, "--config",
        ])
        .arg(config)
        .env_remove("CAMPAIGND_DATABASE_URL")
        .output()
        .await
        .expect("run campaignd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs a one-shot command, captures both streams, returns whether it succeeded.
async fn cli(config: &Path, args: &[&str], log: &Captured) -> bool {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_campaignd"))
        .args(args)
        .args(["--log", LOG, "--config"])
        .arg(config)
        .env("CAMPAIGND_TEST_SMS_PASSWORD", "secret")
        .env("CAMPAIGND_CALLBACK_SECRET", CALLBACK_SECRET)
        .env_remove("CAMPAIGND_DATABASE_URL")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run campaignd");
    let who = format!("campaignd {}", args[0]);
    log.push(&who, &String::from_utf8_lossy(&out.stdout));
    log.push(&who, &String::from_utf8_lossy(&out.stderr));
    out.status.success()
}

/// Numbers ending in 1 are refused for good (403), numbers ending in 2 deferred once (503).
type Deferred = Arc<Mutex<HashSet<String>>>;

async fn sendsms(
    State(deferred): State<Deferred>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, &'static str) {
    let to = q.get("to").cloned().unwrap_or_default();
    if to.ends_with('1') {
        return (StatusCode::FORBIDDEN, "Not routable. Do not try again.");
    }
    if to.ends_with('2') && deferred.lock().unwrap().insert(to) {
        return (StatusCode::SERVICE_UNAVAILABLE, "Queue full, try later.");
    }
    (StatusCode::ACCEPTED, "0: Accepted for delivery")
}

/// Hides the middle of a number as the product does (`13912345678` → `139****5678`).
fn masked(msisdn: &str) -> String {
    format!("{}****{}", &msisdn[..3], &msisdn[msisdn.len() - 4..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_full_phone_number_in_any_log_line() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let db = store::testing::fresh_database(store::testing::backend().unwrap(), dir.path())
        .await
        .unwrap();
    let log = Captured::default();

    // A gateway on port 0.
    let deferred: Deferred = Arc::default();
    let app = axum::Router::new()
        .route("/cgi-bin/sendsms", axum::routing::get(sendsms))
        .with_state(deferred);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let workflows = dir.path().join("workflows");
    std::fs::create_dir_all(workflows.join("templates")).unwrap();
    std::fs::write(
        workflows.join("segments.yaml"),
        "segments:\n  everyone:\n    where: \"tenure_months >= 0\"\n",
    )
    .unwrap();
    std::fs::write(
        workflows.join("templates/offer.txt"),
        "{name}, 5 GB for 10 yuan. Reply 1 to join, TD to opt out.",
    )
    .unwrap();
    std::fs::write(workflows.join("log-check.yaml"), WORKFLOW).unwrap();
    let mut toml = format!("database_url = {:?}\n", db.url);
    if let Some(schema) = &db.schema {
        toml.push_str(&format!("database_schema = {schema:?}\n"));
    }
    toml.push_str(&format!(
        "workflows = {:?}\nlisten = \"127.0.0.1:0\"\n\
         [engine]\nbatch_size = 50\nlease_secs = 60\nmax_attempts = 5\nretry_base_secs = 1\npoll_ms = 50\n\
         [sms]\ntransport = \"http\"\nsendsms_url = \"http://{gateway}/cgi-bin/sendsms\"\n\
         username = \"campaignd\"\npassword_env = \"CAMPAIGND_TEST_SMS_PASSWORD\"\nfrom = \"10086\"\n\
         dlr_url = \"http://127.0.0.1:9/callbacks/kannel/dlr\"\n\
         [email]\ntransport = \"file\"\ndir = {:?}\n",
        workflows.display().to_string(),
        dir.path().join("mail").display().to_string()
    ));
    let config = dir.path().join("campaignd.toml");
    std::fs::write(&config, toml).unwrap();

    // 200 customers of the telco export; then the same file again: refused, every number
    // already in the base (the collision's error must not name them).
    let csv = dir.path().join("customers.csv");
    let fixture = std::fs::read_to_string(
        repo().join("crates/subscribers/tests/fixtures/Telco-Customer-Churn.csv"),
    )
    .unwrap();
    let lines: Vec<&str> = fixture.lines().take(201).collect();
    std::fs::write(&csv, lines.join("\n")).unwrap();
    let mapping = repo().join("workflows/imports/telco-ibm.mapping.yaml");
    let import = [
        "import",
        csv.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
    ];
    assert!(cli(&config, &import, &log).await, "{}", log.text());
    assert!(
        !cli(&config, &import, &log).await,
        "the second import must collide:\n{}",
        log.text()
    );
    // Runs start from approved versions only: an approver approves the folder's version.
    let token = create_token(&config, "approver", "approver").await;
    let gateway = create_token(&config, "kannel", "gateway").await;
    let approve = tokio::process::Command::new(env!("CARGO_BIN_EXE_campaignd"))
        .args(["approve", "log-check", "--config"])
        .arg(&config)
        .env("CAMPAIGND_TOKEN", &token)
        .env_remove("CAMPAIGND_DATABASE_URL")
        .output()
        .await
        .expect("run campaignd");
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    assert!(
        cli(&config, &["trigger", "log-check"], &log).await,
        "{}",
        log.text()
    );

    let store = db.connect().await.unwrap();
    // Ids start at 1; the base is far smaller than 1000.
    let ids: Vec<i64> = (1..=1000).collect();
    let mut base: Vec<String> = store
        .msisdns_of(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, msisdn)| msisdn)
        .collect();
    base.sort();
    assert_eq!(base.len(), 200, "the base is the imported file");
    assert!(base.iter().any(|m| m.ends_with('1')) && base.iter().any(|m| m.ends_with('2')));

    // The daemon, its two streams read line by line into the capture.
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_campaignd"))
        .args([
            "run",
            "--exit-after",
            "300",
            "--shutdown-grace",
            "5",
            "--log",
            LOG,
            "--config",
        ])
        .arg(&config)
        .env("CAMPAIGND_TEST_SMS_PASSWORD", "secret")
        .env("CAMPAIGND_CALLBACK_SECRET", CALLBACK_SECRET)
        .env_remove("CAMPAIGND_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn campaignd run");
    let mut readers = Vec::new();
    for (who, stream) in [
        (
            "daemon stdout",
            daemon
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
        (
            "daemon stderr",
            daemon
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
    ] {
        let log = log.clone();
        let mut lines = BufReader::new(stream.unwrap()).lines();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                log.push(who, &line);
            }
        }));
    }
    let wait_for = |what: &'static str, cond: Box<dyn Fn(&str) -> bool + Send>| {
        let log = log.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !cond(&log.text()) {
                assert!(
                    Instant::now() < deadline,
                    "no {what} within 120 s:\n{}",
                    log.text()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for(
        "listen line",
        Box::new(|t| t.contains("campaignd listening on http://")),
    )
    .await;
    let api = log
        .text()
        .lines()
        .find_map(|l| l.split("campaignd listening on http://").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();

    // Every contact final: sent, or failed for good after the gateway refused it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let states = store.state_counts(None).await.unwrap();
        let total: u64 = states.values().sum();
        let open = states.get("pending").copied().unwrap_or(0)
            + states.get("sending").copied().unwrap_or(0);
        if total == 200 && open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wave did not finish: {states:?}\n{}",
            log.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Replies: "TD" (opt-out), "1" (a response), and a number that is nobody's.
    let opting_out = base.iter().find(|m| m.ends_with('5')).unwrap().clone();
    let replying = base.iter().find(|m| m.ends_with('6')).unwrap().clone();
    let client = reqwest::Client::new();
    for (from, text) in [
        (&opting_out, "TD"),
        (&replying, "1"),
        (&UNKNOWN.to_owned(), "hello"),
    ] {
        let res = client
            .get(format!("http://{api}/callbacks/kannel/mo"))
            .query(&[
                ("from", from.as_str()),
                ("to", "10086"),
                ("text", text),
                ("token", gateway.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert!(
            res.status().is_success(),
            "MO from a number: {}",
            res.status()
        );
    }
    wait_for(
        "opt-out line",
        Box::new(|t| t.contains("Subscriber opted out by SMS reply.")),
    )
    .await;
    wait_for(
        "unknown-number line",
        Box::new(|t| t.contains("Inbound event from an unknown number.")),
    )
    .await;

    // SIGTERM, so the daemon writes its last lines and closes its streams.
    let pid = daemon.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("the daemon stops within 30 s of SIGTERM")
        .unwrap();
    for r in readers {
        r.await.unwrap();
    }
    assert!(status.success(), "{status}\n{}", log.text());

    let all = log.text();
    let numbers: Vec<String> = base.iter().cloned().chain([UNKNOWN.to_owned()]).collect();
    let leaked: Vec<&String> = numbers
        .iter()
        .filter(|m| all.contains(m.as_str()))
        .collect();
    let leaked_lines: Vec<&str> = all
        .lines()
        .filter(|l| leaked.iter().any(|m| l.contains(m.as_str())))
        .take(10)
        .collect();
    assert!(
        leaked.is_empty(),
        "{} full phone numbers in the logs, e.g.:\n{}",
        leaked.len(),
        leaked_lines.join("\n")
    );
    // The lines about numbers were written, masked (else this test proves nothing).
    for (what, number) in [
        ("opt-out by reply", &opting_out),
        ("reply stored", &replying),
        ("unknown number", &UNKNOWN.to_owned()),
    ] {
        assert!(
            all.contains(&masked(number)),
            "{what}: no masked {} in the logs:\n{all}",
            masked(number)
        );
    }
    let refused = base.iter().find(|m| m.ends_with('1')).unwrap();
    assert!(
        all.lines()
            .any(|l| l.contains("Kannel refused SMS.") && l.contains(&masked(refused))),
        "no masked refusal for {}:\n{all}",
        masked(refused)
    );
    println!(
        "{} log lines, none with a full number of the {}-subscriber base",
        all.lines().count(),
        base.len()
    );
}
