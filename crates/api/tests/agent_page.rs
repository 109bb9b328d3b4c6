//! The agents' page (`GET /agent`) in a real headless Chromium (Debian's `chromium`, see
//! scripts/install-deps.sh), driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by NUL on fds 3 and 4, so no WebSocket
//! client is needed): an agent signs in with its token, takes the next task, sees its
//! script and the masked number, sees its hold renewed by the page's heartbeat, gets a
//! plain error for a bad call-back time, picks one in the team's zone (Asia/Shanghai, the
//! browser in UTC), records an outcome by clicking, and is told plainly when a task it shows
//! was lost; the database has each, and a screenshot of the page is checked
//! and kept under `target/tmp/agent-page.png`. Runs on SQLite, or on PostgreSQL with
//! `CAMPAIGND_TEST_BACKEND=postgres`. Without a browser the test is skipped locally and
//! fails under `CI=true`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use api::AppState;
use serde_json::{Value, json};
use store::Store;
use store::auth::Role;
use store::inbound::{NewTask, TaskState, count_unprocessed};
use store::testing::RawDb as _;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const TEAM: &str = "retention-callcentre";
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 800;
/// What the test waits for at most, for any one condition (a wait, not a timing check).
const PATIENCE: Duration = Duration::from_secs(30);
/// Multi-line, with markup that must show as text, never as HTML.
const SCRIPT: &str =
    "Hello, this is the retention team.\nOffer: 30 GB for 38 yuan/month <b>no markup</b>.";

/// Chromium under the DevTools protocol, over the pipe.
struct Browser {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    next_id: u64,
    _profile: TempDir,
}

impl Browser {
    /// `None` when there is no `chromium` and not under CI.
    async fn launch() -> Res<Option<Browser>> {
        let exe = std::env::var("CAMPAIGND_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        if std::process::Command::new(&exe)
            .arg("--version")
            .output()
            .is_err()
        {
            if std::env::var("CI").as_deref() == Ok("true") {
                return Err(format!(
                    "`{exe}` not found: install it with scripts/install-deps.sh (a missing browser fails under CI)"
                )
                .into());
            }
            eprintln!("skipped: `{exe}` not found (scripts/install-deps.sh installs it)");
            return Ok(None);
        }
        let profile = tempfile::tempdir()?;
        // fd 3 is what Chromium reads commands from, fd 4 where it writes answers: the
        // shell puts our stdin and stdout there, and Chromium's own output on stderr.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exe="$1"; shift; exec "$exe" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
            .arg("sh")
            .arg(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-debugging-pipe",
                &format!("--window-size={WIDTH},{HEIGHT}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            // The browser's zone is UTC, the team's Asia/Shanghai: a call-back time picked
            // in the browser's zone would be stored eight hours off.
            .env("TZ", "UTC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let to = child.stdin.take().ok_or("stdin")?;
        let from = BufReader::new(child.stdout.take().ok_or("stdout")?);
        Ok(Some(Browser {
            child,
            to,
            from,
            next_id: 0,
            _profile: profile,
        }))
    }

    /// Sends one command (to a page's session, or to the browser) and returns its result.
    async fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Res<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        self.to.write_all(&bytes).await?;
        self.to.flush().await?;
        let read = async {
            loop {
                let mut buf = Vec::new();
                if self.from.read_until(0, &mut buf).await? == 0 {
                    return Err::<Value, Box<dyn std::error::Error>>(
                        "the browser closed its pipe".into(),
                    );
                }
                buf.pop();
                let v: Value = serde_json::from_slice(&buf)?;
                // Events and other answers are not what we wait for.
                if v["id"].as_u64() == Some(id) {
                    if let Some(e) = v.get("error") {
                        return Err(format!("{method}: {e}").into());
                    }
                    return Ok(v["result"].clone());
                }
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .map_err(|_| format!("{method}: no answer"))?
    }

    /// A new page (tab) of `WIDTH`×`HEIGHT` CSS pixels at scale 1.
    async fn page(&mut self) -> Res<String> {
        let target = self
            .send(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let session = self
            .send(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await?["sessionId"]
            .as_str()
            .ok_or("sessionId")?
            .to_owned();
        self.send(Some(&session), "Page.enable", json!({})).await?;
        self.send(
            Some(&session),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await?;
        Ok(session)
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    async fn eval(&mut self, s: &str, expr: &str) -> Res<Value> {
        let r = self
            .send(
                Some(s),
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{expr}: {e}").into());
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `expr` is true in the page.
    async fn wait_for(&mut self, s: &str, expr: &str) -> Res {
        let started = std::time::Instant::now();
        loop {
            if self.eval(s, expr).await? == json!(true) {
                return Ok(());
            }
            if started.elapsed() > PATIENCE {
                let body = self
                    .eval(s, "document.body && document.body.innerText")
                    .await?;
                return Err(format!("never true: {expr}; the page shows: {body}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A real click (mouse pressed and released) in the middle of the visible element.
    async fn click(&mut self, s: &str, selector: &str) -> Res {
        let sel = serde_json::to_string(selector)?;
        self.wait_for(
            s,
            &format!("(() => {{ const e = document.querySelector({sel}); return !!e && e.offsetParent !== null; }})()"),
        )
        .await?;
        let at = self
            .eval(
                s,
                &format!(
                    "(() => {{ const e = document.querySelector({sel}); e.scrollIntoView({{block: 'center'}}); \
                     const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
                ),
            )
            .await?;
        let (x, y) = (at[0].as_f64().ok_or("x")?, at[1].as_f64().ok_or("y")?);
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.send(
                Some(s),
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await?;
        }
        Ok(())
    }

    /// Clicks into a field and types `text` into it.
    async fn type_into(&mut self, s: &str, selector: &str, text: &str) -> Res {
        self.click(s, selector).await?;
        self.send(Some(s), "Input.insertText", json!({"text": text}))
            .await?;
        Ok(())
    }

    async fn close(mut self) {
        let _ = self.send(None, "Browser.close", json!({})).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Standard base64 (what `Page.captureScreenshot` returns), decoded.
fn base64(text: &str) -> Res<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("not base64: {c}").into()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

struct Server {
    base: String,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The API on port 0 over a fresh database with three open call tasks of `TEAM` (agent-7's
/// team in the teams file, in Asia/Shanghai) whose workflow declares its own outcomes;
/// returns the tasks' ids in the order the queue serves them.
async fn start() -> Res<(Server, Vec<i64>)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let listener = api::bind("127.0.0.1:0".parse()?)?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(api::serve_with(
        listener,
        AppState {
            store: store.clone(),
        },
        api::ServeOptions {
            now: Arc::new(store::wall_now),
            call_teams: Some(Arc::new(api::CallTeams {
                file: "workflows/teams.yaml".into(),
                teams: [(
                    TEAM.to_owned(),
                    api::CallTeam {
                        agents: vec!["agent-7".into()],
                        timezone: "Asia/Shanghai".into(),
                    },
                )]
                .into(),
            })),
            ..api::ServeOptions::default()
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let now = store::wall_now();
    let wave = store::testing::call_wave(
        &store,
        "retention",
        &[
            store::testing::subscriber("13800138000").with("name", "<b>Li Na</b>"),
            store::testing::subscriber("13800138001").with("name", "Wang Wei"),
            store::testing::subscriber("13800138002").with("name", "Zhao Min"),
        ],
        "all",
        now,
        now + 24 * 3_600_000,
    )
    .await?;
    let outcomes = [
        "accepted".to_owned(),
        "wants_visit".to_owned(),
        "call_back_later".to_owned(),
    ];
    let rows: Vec<NewTask> = wave
        .contacts
        .iter()
        .map(|c| NewTask {
            outcomes: &outcomes,
            ..c.task(TEAM, SCRIPT)
        })
        .collect();
    store.open_tasks(&rows, now).await?;
    // Unpaced and of no value: the queue serves them oldest first.
    let mut ids: Vec<i64> = store
        .tasks(Some(TEAM), TaskState::Open, 10)
        .await?
        .iter()
        .map(|t| t.id)
        .collect();
    ids.sort_unstable();
    Ok((
        Server {
            base,
            store,
            stop: Some(stop),
            _dir: dir,
        },
        ids,
    ))
}

// api `agent_page.rs` and its script: the page served by the daemon, in a real browser,
// works the task routes with the agent's token and shows every error plainly.
#[tokio::test]
async fn an_agent_takes_a_task_and_records_its_outcome_in_the_browser() -> Res {
    let (server, ids) = start().await?;
    let task = ids[0];
    let token = server
        .store
        .create_token("agent-7", Role::Agent, Some(TEAM), store::wall_now())
        .await?;

    // The page itself: only this origin's script and style, none inline.
    let resp = reqwest::get(format!("{}/agent", server.base)).await?;
    let csp = resp
        .headers()
        .get("content-security-policy")
        .ok_or("no CSP")?
        .to_str()?
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let html = resp.text().await?;
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script src=").count(),
        "no inline script"
    );

    let Some(mut b) = Browser::launch().await? else {
        return Ok(());
    };
    let p = b.page().await?;
    b.send(
        Some(&p),
        "Page.navigate",
        // The hold's heartbeat every second rather than every 5 minutes.
        json!({"url": format!("{}/agent?renew_every=1", server.base)}),
    )
    .await?;
    b.wait_for(&p, "document.body && document.body.dataset.ready === '1'")
        .await?;

    // Signed in once: the token is in the tab's session storage, never in the address.
    b.type_into(&p, "#token", &token).await?;
    b.click(&p, "#save-token").await?;
    b.wait_for(&p, "!document.getElementById('work').hidden")
        .await?;
    assert_eq!(
        b.eval(&p, "sessionStorage.getItem('campaignd-agent-token')")
            .await?,
        json!(token)
    );
    let href = b.eval(&p, "location.href").await?;
    assert!(!href.as_str().unwrap_or("").contains(&token), "{href}");

    // The next task: its script as text, the number masked, its workflow's outcomes.
    b.click(&p, "#next").await?;
    b.wait_for(&p, "!document.getElementById('task').hidden")
        .await?;
    assert_eq!(
        b.eval(&p, "document.getElementById('task-script').textContent")
            .await?,
        json!(SCRIPT)
    );
    assert_eq!(
        b.eval(&p, "document.querySelectorAll('#task-script *').length")
            .await?,
        json!(0),
        "the script is text, not HTML"
    );
    assert_eq!(
        b.eval(&p, "document.getElementById('task-msisdn').textContent")
            .await?,
        json!("138****8000")
    );
    // The details the catalogue shows to agents, as text: a name holding markup stays text.
    assert_eq!(
        b.eval(
            &p,
            "Array.from(document.querySelectorAll('#task-details dd')).map(d => [d.id, d.textContent])"
        )
        .await?,
        json!([
            ["detail-name", "<b>Li Na</b>"],
            ["detail-brand", "mzone"],
            ["detail-arpu_3m", "50.00 yuan/month"]
        ])
    );
    assert_eq!(
        b.eval(&p, "document.querySelectorAll('#task-details b').length")
            .await?,
        json!(0)
    );
    assert_eq!(
        b.eval(
            &p,
            "Array.from(document.querySelectorAll('#outcomes button')).map(b => b.id)"
        )
        .await?,
        json!([
            "outcome-accepted",
            "outcome-wants_visit",
            "outcome-call_back_later"
        ])
    );
    let held = server.store.task(task).await?.ok_or("task")?;
    assert_eq!(held.held_by.as_deref(), Some("agent-7"));
    // The call-back picker is labelled with the team's zone, not the browser's (UTC).
    assert_eq!(
        b.eval(&p, "document.getElementById('callback-zone').textContent")
            .await?,
        json!("in Asia/Shanghai time")
    );
    // The heartbeat renews the hold while the task is shown: its expiry moves forward in
    // the database without a click.
    assert_eq!(
        b.eval(&p, "document.body.dataset.heartbeat").await?,
        json!("on")
    );
    let first = held.held_until.ok_or("held_until")?;
    let started = std::time::Instant::now();
    loop {
        let t = server.store.task(task).await?.ok_or("task")?;
        if t.held_until.ok_or("held_until")? > first {
            assert_eq!(t.held_by.as_deref(), Some("agent-7"));
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the hold was never renewed: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A call back for a time already past: the API's error, shown plainly.
    b.click(&p, "#outcome-call_back_later").await?;
    b.eval(
        &p,
        "document.getElementById('callback-at').value = '2001-01-01T10:00'; true",
    )
    .await?;
    b.click(&p, "#callback").await?;
    b.wait_for(&p, "!document.getElementById('error').hidden")
        .await?;
    let error = b
        .eval(&p, "document.getElementById('error').textContent")
        .await?;
    assert!(
        error
            .as_str()
            .unwrap_or("")
            .contains("after now (call_back_at)"),
        "{error}"
    );

    // The screenshot, with the task, its outcome buttons and the error on it.
    let shot = b
        .send(Some(&p), "Page.captureScreenshot", json!({"format": "png"}))
        .await?;
    let data = shot["data"].as_str().ok_or("data")?.to_owned();
    let png = base64(&data)?;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let dim = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    assert_eq!((dim(16), dim(20)), (WIDTH, HEIGHT), "the viewport's size");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-page.png");
    std::fs::write(&out, &png)?;
    eprintln!("screenshot: {}", out.display());
    // Its pixels, read back by the browser's own decoder in a blank tab: the header's blue
    // band, the green outcome buttons, the red error bar and dark text are all drawn.
    let blank = b.page().await?;
    let stats = b
        .eval(
            &blank,
            &format!(
                "new Promise((ok, fail) => {{ const i = new Image(); i.onerror = fail; i.onload = () => {{ \
                 const c = document.createElement('canvas'); c.width = i.width; c.height = i.height; \
                 const g = c.getContext('2d'); g.drawImage(i, 0, 0); \
                 const d = g.getImageData(0, 0, i.width, i.height).data; \
                 const n = {{blue: 0, green: 0, red: 0, dark: 0}}; \
                 for (let k = 0; k < d.length; k += 4) {{ const [r, gr, bl] = [d[k], d[k + 1], d[k + 2]]; \
                   if (r === 31 && gr === 58 && bl === 95) n.blue++; \
                   if (r === 46 && gr === 125 && bl === 50) n.green++; \
                   if (r === 198 && gr === 40 && bl === 40) n.red++; \
                   if (r < 80 && gr < 80 && bl < 80) n.dark++; }} \
                 ok(n); }}; i.src = 'data:image/png;base64,{data}'; }})"
            ),
        )
        .await?;
    let n = |k: &str| stats[k].as_u64().unwrap_or(0);
    assert!(n("blue") > u64::from(WIDTH) * 20, "header band: {stats}");
    assert!(n("green") > 3 * 1500, "three outcome buttons: {stats}");
    assert!(n("red") > 50, "the error's bar: {stats}");
    assert!(n("dark") > 1000, "text: {stats}");

    // A call back three hours on, picked as the wall-clock time in Shanghai (UTC+8, no
    // daylight saving) in a browser whose zone is UTC: stored as that instant.
    let at = (store::wall_now() + 3 * 3_600_000) / 60_000 * 60_000;
    let shanghai = chrono::DateTime::from_timestamp_millis(at + 8 * 3_600_000)
        .ok_or("time")?
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    b.eval(
        &p,
        &format!("document.getElementById('callback-at').value = '{shanghai}'; true"),
    )
    .await?;
    b.click(&p, "#callback").await?;
    b.wait_for(
        &p,
        "document.getElementById('status').textContent.includes('goes back to the queue')",
    )
    .await?;
    let t = server.store.task(task).await?.ok_or("task")?;
    assert_eq!(
        (t.state.as_str(), t.callback_at, t.outcome.as_deref()),
        ("open", Some(at), None),
        "{shanghai} in Asia/Shanghai"
    );
    // Nothing is shown any more, and the heartbeat stopped with it.
    assert_eq!(
        b.eval(&p, "document.body.dataset.heartbeat").await?,
        json!("off")
    );

    // The next task (the call back is not due): its outcome, by a click: stored, the task
    // closed, by the token's own agent.
    let task = ids[1];
    b.click(&p, "#next").await?;
    b.wait_for(
        &p,
        &format!("document.getElementById('task-id').textContent === '{task}'"),
    )
    .await?;
    b.click(&p, "#outcome-wants_visit").await?;
    b.wait_for(
        &p,
        "document.getElementById('status').textContent.includes('recorded')",
    )
    .await?;
    assert_eq!(
        b.eval(&p, "document.getElementById('error').hidden")
            .await?,
        json!(true)
    );
    let t = server.store.task(task).await?.ok_or("task")?;
    assert_eq!(
        (t.state.as_str(), t.outcome.as_deref(), t.held_by),
        ("done", Some("wants_visit"), None)
    );
    assert_eq!(
        store::testing::task_agent(&server.store, task)
            .await?
            .as_deref(),
        Some("agent-7")
    );
    assert_eq!(count_unprocessed(server.store.db()).await?, 1);
    assert_eq!(
        b.eval(&p, "document.body.dataset.heartbeat").await?,
        json!("off")
    );

    // A task lost while shown (another agent holds it now): the heartbeat's renewal fails,
    // the page says so plainly and stops renewing.
    let task = ids[2];
    b.click(&p, "#next").await?;
    b.wait_for(
        &p,
        &format!("document.getElementById('task-id').textContent === '{task}'"),
    )
    .await?;
    sea_orm::ConnectionTrait::execute_unprepared(
        server.store.db(),
        &format!("UPDATE agent_task SET held_by = 'agent-8' WHERE id = {task}"),
    )
    .await?;
    b.wait_for(&p, "!document.getElementById('error').hidden")
        .await?;
    let error = b
        .eval(&p, "document.getElementById('error').textContent")
        .await?;
    assert!(
        error.as_str().unwrap_or("").contains(&format!(
            "Task {task} could not be kept, it may be lost: task {task} is held by agent-8"
        )),
        "{error}"
    );
    assert_eq!(
        b.eval(&p, "document.body.dataset.heartbeat").await?,
        json!("off")
    );

    // Nothing left: said plainly.
    b.click(&p, "#next").await?;
    b.wait_for(
        &p,
        "document.getElementById('status').textContent.includes('No task')",
    )
    .await?;
    b.close().await;
    Ok(())
}
