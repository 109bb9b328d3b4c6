//! Shared test support: fresh databases, a loopback SMS gateway that counts every request
//! per idempotency key, and the test workflow.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use store::Store;

/// Held by each heavy end-to-end test (the kill -9 crash test, the replicas, every test with
/// a real Kannel) for its whole run, so no two of them run at once: on two cores, two such
/// tests starve each other's daemons past deadlines that hold for one.
///
/// An exclusive `flock` on a file in the temp dir, not a static mutex: it also keeps apart the
/// heavy tests of two test runs on one machine (a developer's beside CI's), it is released
/// when its holder exits however it dies, and a failing test cannot poison it. Two opens in
/// one process conflict too (the lock belongs to the open file, not the process).
pub(crate) struct Heavy {
    _file: std::fs::File,
}

/// Blocks until no other heavy test runs. Call it first, from the test's own thread (in an
/// async test that thread only waits for the test's future, so blocking it stalls nothing).
pub(crate) fn heavy() -> Heavy {
    let path = std::env::temp_dir().join("campaignd-e2e-heavy.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    Heavy { _file: file }
}

pub(crate) fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repo")
        .to_path_buf()
}

pub(crate) use store::testing::Backend;

/// The backend of tests that are not about one backend: `CAMPAIGND_TEST_BACKEND` (SQLite by
/// default), so scripts/test.sh runs them once on each.
pub(crate) fn env_backend() -> Backend {
    store::testing::backend().unwrap_or_else(|e| panic!("{e}"))
}

/// A migrated, empty database of its own.
pub(crate) struct TestDb {
    pub(crate) store: Store,
    pub(crate) url: String,
    pub(crate) schema: Option<String>,
    _dir: tempfile::TempDir,
}

pub(crate) async fn fresh_db(backend: Backend) -> TestDb {
    init();
    let dir = tempfile::tempdir().expect("temp dir");
    // On PostgreSQL each test gets its own schema, so tests never see each other's rows. A
    // missing PostgreSQL is a failure, never a skip.
    let db = store::testing::fresh_database(backend, dir.path())
        .await
        .unwrap_or_else(|e| panic!("a {backend:?} database is required for this test: {e}"));
    let store = db
        .connect()
        .await
        .unwrap_or_else(|e| panic!("open {backend:?} at {}: {e}", db.url));
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrate {backend:?}: {e}"));
    TestDb {
        store,
        url: db.url,
        schema: db.schema,
        _dir: dir,
    }
}

/// The secret the tests' APIs check delivery-report tokens with (the daemon's
/// `CAMPAIGND_CALLBACK_SECRET`).
pub(crate) const CALLBACK_SECRET: &str = "e2e-callback-secret-0123456789abcdef";

pub(crate) fn callback_secret() -> store::auth::Secret {
    store::auth::Secret::new(CALLBACK_SECRET.as_bytes().to_vec()).expect("a long secret")
}

/// Serving options as the daemon's: events stamped by `now`, delivery reports checked
/// against [`CALLBACK_SECRET`].
pub(crate) fn serve_options(now: api::Now) -> api::ServeOptions {
    api::ServeOptions {
        now,
        callbacks: api::auth::CallbackAuth {
            dlr_secret: Some(callback_secret()),
            ..Default::default()
        },
        ..api::ServeOptions::default()
    }
}

/// A gateway principal's token, for the MO callback (`token=` in Kannel's get-url).
pub(crate) async fn gateway_token(store: &Store) -> String {
    store
        .create_token(
            "kannel",
            store::auth::Role::Gateway,
            None,
            store::wall_now(),
        )
        .await
        .expect("create the gateway token")
}

/// The token campaignd puts in the dlr-url of `key`.
pub(crate) fn dlr_token(key: &str) -> String {
    store::auth::callback_token(&callback_secret(), key)
}

/// The channels the daemon wires for the test workflows: SMS over Kannel's sendsms at
/// `sendsms_url` (password from CARGO_PKG_NAME, which cargo sets for test processes, so no
/// secret is written and no env mutation is needed), and outbound-call tasks.
pub(crate) async fn kannel_channels(
    store: &Store,
    sendsms_url: String,
    dlr_url: String,
    concurrency: usize,
) -> HashMap<String, std::sync::Arc<dyn channels::Channel>> {
    let cfg = channels::sms::KannelConfig {
        sendsms_url,
        username: "campaignd".into(),
        password_env: "CARGO_PKG_NAME".into(),
        from: "10086".into(),
        dlr_url,
        dlr_mask: 27,
        concurrency,
        timeout_ms: 10_000,
        smsc: None,
        ack_grace_ms: 60_000,
        max_per_second: None,
    };
    // Built as `sms::build` builds it, with the signing secret passed in rather than read
    // from CAMPAIGND_CALLBACK_SECRET (tests do not change their own environment).
    let sms: std::sync::Arc<dyn channels::Channel> = std::sync::Arc::new(
        channels::sms::KannelSms::with_password(&cfg, env!("CARGO_PKG_NAME"))
            .expect("build the Kannel channel")
            .with_dlr_secret(callback_secret()),
    );
    let mut chans: HashMap<String, std::sync::Arc<dyn channels::Channel>> = HashMap::new();
    chans.insert("sms".into(), sms);
    chans.insert(
        "outbound_call".into(),
        std::sync::Arc::new(channels::worklist::Worklist::new(
            store.clone(),
            "outbound_call",
        )),
    );
    chans
}

/// Writes a workflows folder (workflow file, segments.yaml, templates) into `dir`.
pub(crate) fn write_workflows(dir: &Path, workflow_yaml: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("segments.yaml"), SEGMENTS).unwrap();
    std::fs::write(
        dir.join("templates/offer.txt"),
        "{name}, the campus bundle is 18 yuan a month. Reply 1 to join.",
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/call.txt"),
        "Call {name} about the campus bundle ({value_tier}).",
    )
    .unwrap();
    let path = dir.join("test-campaign.yaml");
    std::fs::write(&path, workflow_yaml).unwrap();
    path
}

pub(crate) const SEGMENTS: &str = r#"
segments:
  students:
    where: "student_stage in ['freshman', 'student', 'graduate']"
  do_not_disturb:
    where: "do_not_disturb"
  complained_30d:
    where: "complaints_30d > 0"
"#;

/// Two waves: SMS to students, then outbound calls to those who did not reply. No quiet
/// hours, so the test does not depend on the time of day; windows of one day.
pub(crate) const TWO_WAVES: &str = r#"
campaign: test-campaign
timezone: Asia/Shanghai
audience:
  segment: students
  where: "arpu_3m >= 10"
  exclude: [do_not_disturb, complained_30d]
control: { share: 0.10, stratify_by: value_tier }
policy:
  max_contacts: { count: 2, per: 7d }
waves:
  - id: sms_offer
    channel: sms
    template: templates/offer.txt
    respond_within: 1d
    send_within: 1d
    responses:
      - reply: "1"
  - id: call
    after: sms_offer
    targets: no_response
    channel: outbound_call
    team: callcentre
    template: templates/call.txt
    respond_within: 1d
    responses:
      - outcome: accepted
evaluate:
  goal: { type: order, value: campus-bundle }
"#;

/// Whether the simulated subscriber with this number replies "1" (a fixed rule, so the test
/// knows the expected counts).
pub(crate) fn replies(msisdn: &str) -> bool {
    msisdn.ends_with('3') || msisdn.ends_with('7')
}

/// A loopback stand-in for Kannel's sendsms: answers `0: Accepted for delivery`, counts
/// requests per idempotency key, then plays the SMSC: calls the message's dlr-url with a
/// type-1 (delivered) report and, for subscribers who reply, sends an MO to campaignd.
#[derive(Clone)]
pub(crate) struct Gateway {
    pub(crate) addr: SocketAddr,
    pub(crate) hits: Arc<Mutex<HashMap<String, u32>>>,
}

#[derive(Clone)]
struct GwState {
    hits: Arc<Mutex<HashMap<String, u32>>>,
    callback_base: String,
    client: reqwest::Client,
    password: String,
    /// campaignd's gateway token, sent with each MO.
    mo_token: String,
}

pub(crate) async fn start_gateway(
    callback_base: String,
    password: String,
    mo_token: String,
) -> Gateway {
    init();
    let hits = Arc::new(Mutex::new(HashMap::new()));
    let state = GwState {
        hits: hits.clone(),
        callback_base,
        client: reqwest::Client::new(),
        password,
        mo_token,
    };
    let app = axum::Router::new()
        .route("/cgi-bin/sendsms", get(sendsms))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Gateway { addr, hits }
}

/// The idempotency key campaignd put in a sendsms request's dlr-url.
pub(crate) fn key_of(q: &HashMap<String, String>) -> Option<String> {
    let dlr = url::Url::parse(q.get("dlr-url")?).ok()?;
    dlr.query_pairs()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.into_owned())
}

async fn sendsms(
    State(st): State<GwState>,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, &'static str) {
    if q.get("password") != Some(&st.password) {
        return (StatusCode::FORBIDDEN, "Authorization failed for sendsms");
    }
    let (Some(to), Some(dlr)) = (q.get("to").cloned(), q.get("dlr-url").cloned()) else {
        return (StatusCode::BAD_REQUEST, "Missing receiver number, rejected");
    };
    let Some(key) = key_of(&q) else {
        return (StatusCode::BAD_REQUEST, "no key in dlr-url");
    };
    *st.hits.lock().unwrap().entry(key).or_insert(0) += 1;
    let dlr = dlr
        .replace("%d", "1")
        .replace("%p", &to)
        .replace("%T", "1790000000")
        .replace("%i", "FAKE")
        .replace("%F", "f1")
        .replace("%A", "");
    let client = st.client.clone();
    let mo = replies(&to).then(|| {
        format!(
            "{}/callbacks/kannel/mo?from={to}&to=10086&text=1&token={}",
            st.callback_base, st.mo_token
        )
    });
    tokio::spawn(async move {
        let _ = client.get(&dlr).send().await;
        if let Some(mo) = mo {
            let _ = client.get(&mo).send().await;
        }
    });
    (StatusCode::ACCEPTED, "0: Accepted for delivery")
}

/// The part of `mail` with `content_type` (`text/plain`, `text/html`), decoded: its own
/// headers say how (quoted-printable for lines of 76 characters or more; every value in a
/// digest is ASCII, so never base64).
pub(crate) fn mail_part(mail: &str, content_type: &str) -> String {
    let mail = mail.replace("\r\n", "\n");
    let at = mail
        .find(&format!("Content-Type: {content_type}"))
        .unwrap_or_else(|| panic!("no {content_type} part in: {mail}"));
    let start = mail[..at].rfind("\n\n").map_or(0, |i| i + 2);
    let (headers, raw) = mail[start..].split_once("\n\n").unwrap();
    let raw = raw.find("\n--").map_or(raw, |end| &raw[..end]);
    assert!(!headers.contains("base64"), "{headers}");
    if !headers.contains("Content-Transfer-Encoding: quoted-printable") {
        return raw.to_owned();
    }
    let joined = raw.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
