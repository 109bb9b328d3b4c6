//! The call-centre queue over real HTTP (127.0.0.1, port 0) with a real client, against a
//! migrated database (SQLite, or PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`): agents
//! take their next task, call back later, and record only what they hold; a dialer takes
//! batches and reports outcomes, the same report twice changing nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use api::AppState;
use reqwest::StatusCode;
use serde_json::{Value, json};
use store::Store;
use store::auth::Role;
use store::calls::Pace;
use store::inbound::{NewTask, TaskState, count_unprocessed};
use store::testing::RawDb as _;
use tempfile::TempDir;
use tokio::sync::oneshot;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const T0: i64 = 1_780_000_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const TEAM: &str = "callcentre";

struct Server {
    base: String,
    store: Store,
    clock: Arc<AtomicI64>,
    client: reqwest::Client,
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

impl Server {
    /// A server on a manual clock at `T0` with `arpu.len()` queued, released call tasks of
    /// `TEAM` (subscriber `i` with ARPU `arpu[i]`) and one of another team; returns the
    /// team's task ids by subscriber.
    async fn start(arpu: &[f64]) -> Res<(Server, Vec<i64>, i64)> {
        Server::start_with(arpu, None).await
    }

    /// [`Server::start`] with the teams' working hours the daemon would hand in.
    async fn start_with(
        arpu: &[f64],
        call_hours: Option<api::CallHours>,
    ) -> Res<(Server, Vec<i64>, i64)> {
        Server::start_opts(
            arpu,
            api::ServeOptions {
                call_hours,
                ..api::ServeOptions::default()
            },
        )
        .await
    }

    /// [`Server::start`] with what the daemon hands in from the teams file (`opts`; its
    /// clock is the server's manual one).
    async fn start_opts(arpu: &[f64], extra: api::ServeOptions) -> Res<(Server, Vec<i64>, i64)> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let store = store::testing::fresh_store(dir.path()).await?;
        let listener = api::bind("127.0.0.1:0".parse()?)?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let clock = Arc::new(AtomicI64::new(T0));
        let c = clock.clone();
        let opts = api::ServeOptions {
            now: Arc::new(move || c.load(Ordering::SeqCst)),
            ..extra
        };
        tokio::spawn(api::serve_with(
            listener,
            AppState {
                store: store.clone(),
            },
            opts,
            async move {
                let _ = stopped.await;
            },
        ));
        let (ids, other) = seed(&store, arpu).await?;
        let s = Server {
            base,
            store,
            clock,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            stop: Some(stop),
            _dir: dir,
        };
        Ok((s, ids, other))
    }

    fn set(&self, t: i64) {
        self.clock.store(t, Ordering::SeqCst);
    }

    async fn token(&self, name: &str, role: Role, team: Option<&str>) -> Res<String> {
        Ok(self.store.create_token(name, role, team, T0).await?)
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> Res<(StatusCode, Value)> {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((status, v))
    }

    async fn outcomes(&self) -> Res<u64> {
        Ok(count_unprocessed(self.store.db()).await?)
    }
}

async fn seed(store: &Store, arpu: &[f64]) -> Res<(Vec<i64>, i64)> {
    let subs: Vec<_> = (0..=arpu.len())
        .map(|i| {
            store::testing::subscriber(&format!("1380000{i:04}"))
                .with("arpu_3m", arpu.get(i).copied().unwrap_or(999.0))
        })
        .collect();
    let wave = store::testing::call_wave(store, "c", &subs, "all", T0, T0 + 24 * HOUR).await?;
    let sub_ids: Vec<i64> = wave.contacts.iter().map(|c| c.subscriber_id).collect();
    let rows: Vec<_> = wave
        .contacts
        .iter()
        .enumerate()
        .map(|(i, c)| NewTask {
            queued: true,
            ..c.task(if i < arpu.len() { TEAM } else { "other" }, "save bundle")
        })
        .collect();
    store.open_tasks(&rows, T0).await?;
    for team in [TEAM, "other"] {
        store
            .release_tasks(
                &Pace {
                    team,
                    day: "2026-05-28",
                    capacity_per_day: 1000,
                    pacing_per_hour: 1000,
                    value: "arpu_3m",
                    catch_up_minutes: 0,
                },
                T0,
            )
            .await?;
    }
    let tasks = store.tasks(None, TaskState::Open, 1000).await?;
    let by_sub = |s: i64| tasks.iter().find(|t| t.subscriber_id == s).map(|t| t.id);
    let ids = sub_ids[..arpu.len()]
        .iter()
        .map(|s| by_sub(*s).ok_or("task"))
        .collect::<Result<Vec<i64>, _>>()?;
    let other = by_sub(sub_ids[arpu.len()]).ok_or("task")?;
    Ok((ids, other))
}

fn field(v: &Value) -> &str {
    v["field"].as_str().unwrap_or("")
}

// api `calls.rs` `next` / `callback` and `tasks.rs` `outcome`: the best task first, one
// agent at a time; a callback is bounded and hides its task until its time; an agent
// records only what it holds, a supervisor anything open.
#[tokio::test]
async fn agents_take_the_best_task_call_back_later_and_record_only_what_they_hold() -> Res {
    // Subscriber values: task ids[1] is the most valuable, then ids[2], then ids[0].
    let (s, ids, other) = Server::start(&[150.0, 900.0, 400.0]).await?;
    let a1 = s.token("agent-1", Role::Agent, Some(TEAM)).await?;
    let a2 = s.token("agent-2", Role::Agent, Some(TEAM)).await?;
    let a3 = s.token("agent-3", Role::Agent, Some(TEAM)).await?;
    let admin = s.token("lead", Role::Admin, None).await?;

    let (st, t) = s.post(&a1, "/tasks/next", json!({})).await?;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert_eq!(t["id"], ids[1]);
    assert_eq!(t["held_by"], "agent-1");
    assert_eq!(t["held_until"], T0 + 15 * MINUTE);
    assert_eq!(t["value"], 900.0);
    // Asking again gives back the task it holds, not a second one.
    let (_, again) = s.post(&a1, "/tasks/next", json!({})).await?;
    assert_eq!(again["id"], ids[1]);
    let (_, t2) = s.post(&a2, "/tasks/next", json!({})).await?;
    assert_eq!(t2["id"], ids[2]);
    let (st, body) = s.post(&a2, "/tasks/next", json!({"team": "other"})).await?;
    assert_eq!((st, field(&body)), (StatusCode::BAD_REQUEST, "team"));
    // An admin has no queue of its own.
    assert_eq!(
        s.post(&admin, "/tasks/next", json!({})).await?.0,
        StatusCode::FORBIDDEN
    );

    // Agent 2 cannot record or re-queue agent 1's task; another team's task is another
    // team's.
    let accepted = json!({"outcome": "accepted", "agent": "agent-2"});
    let path = |id: i64, what: &str| format!("/tasks/{id}/{what}");
    let (st, body) = s
        .post(&a2, &path(ids[1], "outcome"), accepted.clone())
        .await?;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("held by agent-1"),
        "{body}"
    );
    // Nobody holds ids[0]: a queued task is recorded only by its holder.
    let (st, body) = s
        .post(&a2, &path(ids[0], "outcome"), accepted.clone())
        .await?;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("POST /tasks/next"),
        "{body}"
    );
    assert_eq!(
        s.post(
            &a2,
            &path(other, "callback"),
            json!({"at": "2026-05-29T10:00:00Z"})
        )
        .await?
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(s.outcomes().await?, 0, "nothing recorded");

    // A callback is bounded: a time, after now, not after the deadline (the window's close).
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339()
    };
    for (body, want) in [
        (json!({}), "at"),
        (json!({"at": 17}), "at"),
        (json!({"at": "tomorrow at six"}), "at"),
        (json!({"at": iso(T0 - MINUTE)}), "at"),
        (json!({"at": iso(T0 + 25 * HOUR)}), "at"),
        (json!({"at": iso(T0 + HOUR), "note": "x"}), "note"),
    ] {
        let (st, resp) = s.post(&a1, &path(ids[1], "callback"), body.clone()).await?;
        assert_eq!(
            (st, field(&resp)),
            (StatusCode::BAD_REQUEST, want),
            "{body}: {resp}"
        );
    }
    let (st, body) = s
        .post(
            &a2,
            &path(ids[1], "callback"),
            json!({"at": iso(T0 + HOUR)}),
        )
        .await?;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let (st, body) = s
        .post(
            &a1,
            &path(ids[1], "callback"),
            json!({"at": iso(T0 + 2 * HOUR)}),
        )
        .await?;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["callback_at"], T0 + 2 * HOUR);

    // Agent 1 gets the next best one; the called-back task waits for its time.
    let (_, t) = s.post(&a1, "/tasks/next", json!({})).await?;
    assert_eq!(t["id"], ids[0]);
    let (st, _) = s.post(&a3, "/tasks/next", json!({})).await?;
    assert_eq!(
        st,
        StatusCode::NO_CONTENT,
        "the queue is empty until the callback"
    );
    // At its time it is agent 1's, who promised the call, for the grace: agent 2 gets the
    // next best one; after the grace anyone keeps the promise.
    s.set(T0 + 2 * HOUR);
    let (_, t) = s.post(&a2, "/tasks/next", json!({})).await?;
    assert_eq!(t["id"], ids[2], "not the callback: agent 1's for now");
    s.set(T0 + 2 * HOUR + store::calls::CALLBACK_GRACE_MS);
    let (_, t) = s.post(&a3, "/tasks/next", json!({})).await?;
    assert_eq!(t["id"], ids[1], "the callback comes back at its time");

    // Agent 3 holds it now and records it; the supervisor closes agent 2's task (its hold
    // ran out long ago, and a supervisor may close any open task anyway).
    let (st, body) = s
        .post(
            &a3,
            &path(ids[1], "outcome"),
            json!({"outcome": "accepted", "agent": "agent-3"}),
        )
        .await?;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = s
        .post(
            &admin,
            &path(ids[2], "outcome"),
            json!({"outcome": "refused", "agent": "lead"}),
        )
        .await?;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(s.outcomes().await?, 2);
    Ok(())
}

/// `TEAM` works 20:00-23:00 UTC (`T0` is 20:26:40 UTC); other teams are not declared.
fn evening_hours() -> api::CallHours {
    Arc::new(|team, at| {
        (team == TEAM).then(|| {
            let hour = (at / HOUR).rem_euclid(24);
            if (20..23).contains(&hour) {
                Ok(())
            } else {
                Err("20:00-23:00 UTC".to_owned())
            }
        })
    })
}

// api `tasks.rs` `outcome` with `call_back_at`, `calls.rs` `requeue` / `renew`: recording
// `call_back_later` with a time re-queues the task (open, no outcome) for its agent first;
// every bad time is refused by name and changes nothing; a renewed hold outlasts 15
// minutes; an agent token records only as itself.
#[tokio::test]
async fn call_back_later_requeues_for_its_agent_and_a_hold_is_renewed() -> Res {
    let (s, ids, _) = Server::start_with(&[900.0, 100.0], Some(evening_hours())).await?;
    let a1 = s.token("agent-1", Role::Agent, Some(TEAM)).await?;
    let a2 = s.token("agent-2", Role::Agent, Some(TEAM)).await?;
    let admin = s.token("lead", Role::Admin, None).await?;
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339()
    };
    let id = ids[0];
    let (_, t) = s.post(&a1, "/tasks/next", json!({})).await?;
    assert_eq!(t["id"], id);
    assert_eq!(t["msisdn"], "138****0000", "masked");
    // Only what the catalogue shows to agents (`agents: true`), in its order.
    assert_eq!(
        t["details"],
        json!([
            {"name": "name", "value": "Test"},
            {"name": "brand", "value": "mzone"},
            {"name": "arpu_3m", "value": "900.00", "unit": "yuan/month"},
        ])
    );
    assert_eq!(
        t["outcomes"],
        json!(["accepted", "refused", "call_back_later", "unreachable"])
    );
    let path = |what: &str| format!("/tasks/{id}/{what}");

    // The holder keeps the task past the first 15 minutes; nobody else can renew it.
    s.set(T0 + 10 * MINUTE);
    let (st, body) = s.post(&a2, &path("hold"), json!({})).await?;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let (st, body) = s.post(&a1, &path("hold"), json!({"minutes": 5})).await?;
    assert_eq!((st, field(&body)), (StatusCode::BAD_REQUEST, "minutes"));
    let (st, body) = s.post(&a1, &path("hold"), json!({})).await?;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["held_until"], T0 + 25 * MINUTE);
    s.set(T0 + 20 * MINUTE);
    assert_eq!(
        s.post(&a2, "/tasks/next", json!({})).await?.1["id"],
        ids[1],
        "the renewed task stays agent 1's"
    );

    // Every bad call-back time is refused by name, and nothing changes.
    let cb = |at: Value| json!({"outcome": "call_back_later", "call_back_at": at});
    for (body, st_want, want) in [
        (cb(json!("at six")), StatusCode::BAD_REQUEST, "call_back_at"),
        (cb(json!(18)), StatusCode::BAD_REQUEST, "call_back_at"),
        (cb(json!(iso(T0))), StatusCode::BAD_REQUEST, "call_back_at"),
        (
            cb(json!(iso(T0 + 24 * HOUR))),
            StatusCode::BAD_REQUEST,
            "call_back_at",
        ),
        (
            cb(json!(iso(T0 + 3 * HOUR))),
            StatusCode::BAD_REQUEST,
            "call_back_at",
        ),
        (
            json!({"outcome": "accepted", "call_back_at": iso(T0 + HOUR)}),
            StatusCode::BAD_REQUEST,
            "call_back_at",
        ),
        (
            json!({"outcome": "accepted", "agent": "agent-2"}),
            StatusCode::FORBIDDEN,
            "",
        ),
    ] {
        let (st, resp) = s.post(&a1, &path("outcome"), body.clone()).await?;
        assert_eq!((st, field(&resp)), (st_want, want), "{body}: {resp}");
    }
    let (_, resp) = s
        .post(&a1, &path("outcome"), cb(json!(iso(T0 + 3 * HOUR))))
        .await?;
    assert!(
        resp["error"]
            .as_str()
            .unwrap_or("")
            .contains("working hours 20:00-23:00 UTC"),
        "{resp}"
    );
    // A supervisor closes tasks; it does not re-queue them for itself.
    let (st, _) = s
        .post(
            &admin,
            &path("outcome"),
            json!({"outcome": "call_back_later", "agent": "lead", "call_back_at": iso(T0 + HOUR)}),
        )
        .await?;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let t = s.store.task(id).await?.ok_or("task")?;
    assert_eq!(
        (t.state.as_str(), t.held_by.as_deref(), t.callbacks),
        ("open", Some("agent-1"), 0)
    );
    assert_eq!(s.outcomes().await?, 0, "nothing recorded");

    // Agreed for 22:00 UTC: the task goes back, open, and is no completed contact.
    let at = T0 + HOUR + 33 * MINUTE + 20_000;
    let (st, body) = s.post(&a1, &path("outcome"), cb(json!(iso(at)))).await?;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        (body["state"].as_str(), body["callback_at"].as_i64()),
        (Some("open"), Some(at))
    );
    let t = s.store.task(id).await?.ok_or("task")?;
    assert_eq!(
        (
            t.state.as_str(),
            t.held_by.as_deref(),
            t.callback_for.as_deref(),
            t.callbacks
        ),
        ("open", None, Some("agent-1"), 1)
    );
    assert_eq!(s.outcomes().await?, 0, "a call back is not an outcome");

    // At its time agent 1 gets it back; agent 2 does not within the grace.
    s.set(at);
    let (_, t) = s.post(&a2, "/tasks/next", json!({})).await?;
    assert_eq!(
        t["id"], ids[1],
        "agent 2 gets the other task again, not the callback"
    );
    let a3 = s.token("agent-3", Role::Agent, Some(TEAM)).await?;
    assert_eq!(
        s.post(&a3, "/tasks/next", json!({})).await?.0,
        StatusCode::NO_CONTENT
    );
    let (_, t) = s.post(&a1, "/tasks/next", json!({})).await?;
    assert_eq!(t["id"], id);
    // Recorded as the token's own agent, `agent` left out.
    let (st, body) = s
        .post(&a1, &path("outcome"), json!({"outcome": "accepted"}))
        .await?;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(s.outcomes().await?, 1);
    assert_eq!(
        store::testing::task_agent(&s.store, id).await?.as_deref(),
        Some("agent-1")
    );
    Ok(())
}

// api `calls.rs` `batch` / `outcomes`: a dialer token takes up to `size` tasks at once,
// bounded; its report records each held task once, says `already` for a report sent
// again (changing nothing), and refuses what it does not hold.
#[tokio::test]
async fn a_dialer_takes_batches_and_reports_outcomes_idempotently() -> Res {
    let (s, ids, other) = Server::start(&[300.0, 200.0, 100.0]).await?;
    let dialer = s.token("dialer-1", Role::Agent, Some(TEAM)).await?;
    let operator = s.token("ops", Role::Operator, None).await?;
    for (body, want) in [
        (json!({"size": 0}), "size"),
        (json!({"size": 501}), "size"),
        (json!({"size": "two"}), "size"),
        (json!({"hold_minutes": 481}), "hold_minutes"),
        (json!({"priority": 1}), "priority"),
        (json!([1]), "body"),
    ] {
        let (st, resp) = s.post(&dialer, "/dialer/batches", body.clone()).await?;
        assert_eq!(
            (st, field(&resp)),
            (StatusCode::BAD_REQUEST, want),
            "{body}: {resp}"
        );
    }
    assert_eq!(
        s.post(&operator, "/dialer/batches", json!({})).await?.0,
        StatusCode::FORBIDDEN
    );
    let (st, batch) = s
        .post(
            &dialer,
            "/dialer/batches",
            json!({"size": 2, "hold_minutes": 30}),
        )
        .await?;
    assert_eq!(st, StatusCode::OK, "{batch}");
    assert_eq!(batch["held_until"], T0 + 30 * MINUTE);
    let got: Vec<i64> = batch["tasks"]
        .as_array()
        .ok_or("tasks")?
        .iter()
        .filter_map(|t| t["id"].as_i64())
        .collect();
    assert_eq!(got, vec![ids[0], ids[1]], "the most valuable first");

    // A malformed report records nothing.
    for (body, want) in [
        (json!({}), "outcomes"),
        (json!({"outcomes": []}), "outcomes"),
        (
            json!({"outcomes": [{"task": ids[0]}]}),
            "outcomes[0].outcome",
        ),
        (
            json!({"outcomes": [{"task": ids[0], "outcome": "accepted"}, {"task": -1, "outcome": "accepted"}]}),
            "outcomes[1].task",
        ),
        (
            json!({"outcomes": [{"task": ids[0], "outcome": "accepted", "by": "x"}]}),
            "outcomes[0].by",
        ),
    ] {
        let (st, resp) = s.post(&dialer, "/dialer/outcomes", body.clone()).await?;
        assert_eq!(
            (st, field(&resp)),
            (StatusCode::BAD_REQUEST, want),
            "{body}: {resp}"
        );
    }
    assert_eq!(s.outcomes().await?, 0);

    let report = json!({"outcomes": [
        {"task": ids[0], "outcome": "accepted"},
        {"task": ids[1], "outcome": "unreachable"},
    ]});
    let (st, res) = s.post(&dialer, "/dialer/outcomes", report.clone()).await?;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(
        res,
        json!([{"task": ids[0], "result": "recorded"}, {"task": ids[1], "result": "recorded"}])
    );
    assert_eq!(s.outcomes().await?, 2);
    // The dialer retries the same report (its callback timed out): nothing changes.
    let (st, res) = s.post(&dialer, "/dialer/outcomes", report).await?;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(
        res,
        json!([{"task": ids[0], "result": "already"}, {"task": ids[1], "result": "already"}])
    );
    assert_eq!(s.outcomes().await?, 2);
    let done = s.store.tasks(Some(TEAM), TaskState::Done, 10).await?;
    assert_eq!(done.len(), 2);

    // What it does not hold, another outcome for a done task, a bad outcome, another
    // team's task and an unknown one are refused, each said why; nothing recorded.
    let (_, res) = s
        .post(
            &dialer,
            "/dialer/outcomes",
            json!({"outcomes": [
                {"task": ids[2], "outcome": "accepted"},
                {"task": ids[0], "outcome": "refused"},
                {"task": ids[1], "outcome": "maybe"},
                {"task": other, "outcome": "accepted"},
                {"task": 999999, "outcome": "accepted"},
            ]}),
        )
        .await?;
    let results: Vec<&str> = res
        .as_array()
        .ok_or("array")?
        .iter()
        .filter_map(|r| r["result"].as_str())
        .collect();
    assert_eq!(results, vec!["refused"; 5], "{res}");
    assert!(
        res[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("not held by dialer-1"),
        "{res}"
    );
    assert!(
        res[3]["error"]
            .as_str()
            .unwrap_or("")
            .contains("another team"),
        "{res}"
    );
    assert_eq!(s.outcomes().await?, 2);

    // The rest of the queue: one left, then none.
    let (_, batch) = s.post(&dialer, "/dialer/batches", json!({})).await?;
    assert_eq!(batch["tasks"].as_array().map(Vec::len), Some(1));
    let (_, batch) = s.post(&dialer, "/dialer/batches", json!({})).await?;
    assert_eq!(batch["tasks"], json!([]));
    Ok(())
}

// api `calls.rs` `outcomes` with `call_back_at`: a dialer's `call_back_later` with a time
// re-queues the task (open, no outcome) for the dialer first, as an agent's does; a time
// that cannot be taken refuses that report alone; a malformed one records nothing; the
// same call back sent again changes nothing.
#[tokio::test]
async fn a_dialer_call_back_requeues_its_task_for_the_agreed_time() -> Res {
    let (s, ids, _) = Server::start_with(&[300.0, 200.0], Some(evening_hours())).await?;
    let dialer = s.token("dialer-1", Role::Agent, Some(TEAM)).await?;
    let agent = s.token("agent-2", Role::Agent, Some(TEAM)).await?;
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339()
    };
    let (_, batch) = s
        .post(
            &dialer,
            "/dialer/batches",
            json!({"size": 2, "hold_minutes": 120}),
        )
        .await?;
    assert_eq!(batch["tasks"].as_array().map(Vec::len), Some(2), "{batch}");

    // A time that is not one, or a time with another outcome: nothing recorded.
    let at = T0 + HOUR;
    for (body, want) in [
        (
            json!({"outcomes": [{"task": ids[1], "outcome": "unreachable"}, {"task": ids[0], "outcome": "call_back_later", "call_back_at": "at six"}]}),
            "outcomes[1].call_back_at",
        ),
        (
            json!({"outcomes": [{"task": ids[0], "outcome": "call_back_later", "call_back_at": 18}]}),
            "outcomes[0].call_back_at",
        ),
        (
            json!({"outcomes": [{"task": ids[0], "outcome": "accepted", "call_back_at": iso(at)}]}),
            "outcomes[0].call_back_at",
        ),
    ] {
        let (st, resp) = s.post(&dialer, "/dialer/outcomes", body.clone()).await?;
        assert_eq!(
            (st, field(&resp)),
            (StatusCode::BAD_REQUEST, want),
            "{body}: {resp}"
        );
    }
    let untouched = s.store.task(ids[1]).await?.ok_or("task")?;
    assert_eq!(
        untouched.state, "open",
        "a malformed report records nothing"
    );

    // One call back inside the team's hours, one outside them: each answered for itself.
    let report = json!({"outcomes": [
        {"task": ids[0], "outcome": "call_back_later", "call_back_at": iso(at)},
        {"task": ids[1], "outcome": "call_back_later", "call_back_at": iso(T0 + 3 * HOUR)},
    ]});
    let (st, res) = s.post(&dialer, "/dialer/outcomes", report.clone()).await?;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(
        res[0],
        json!({"task": ids[0], "result": "requeued"}),
        "{res}"
    );
    assert_eq!(res[1]["result"], "refused", "{res}");
    assert!(
        res[1]["error"]
            .as_str()
            .unwrap_or("")
            .contains("working hours 20:00-23:00 UTC"),
        "{res}"
    );
    let t = s.store.task(ids[0]).await?.ok_or("task")?;
    assert_eq!(
        (
            t.state.as_str(),
            t.held_by.as_deref(),
            t.callback_at,
            t.callback_for.as_deref(),
            t.callbacks
        ),
        ("open", None, Some(at), Some("dialer-1"), 1)
    );
    let t = s.store.task(ids[1]).await?.ok_or("task")?;
    assert_eq!(
        (t.state.as_str(), t.held_by.as_deref(), t.callbacks),
        ("open", Some("dialer-1"), 0),
        "the refused call back changed nothing"
    );
    assert_eq!(s.outcomes().await?, 0, "a call back is not an outcome");

    // The dialer retries the same report: the call back is not taken twice.
    let (_, res) = s.post(&dialer, "/dialer/outcomes", report).await?;
    assert_eq!(
        res[0],
        json!({"task": ids[0], "result": "already"}),
        "{res}"
    );
    let t = s.store.task(ids[0]).await?.ok_or("task")?;
    assert_eq!((t.callback_at, t.callbacks), (Some(at), 1));

    // Hidden until its time; then the dialer's, within the grace, before anyone else's.
    assert_eq!(
        s.post(&agent, "/tasks/next", json!({})).await?.0,
        StatusCode::NO_CONTENT
    );
    s.set(at);
    assert_eq!(
        s.post(&agent, "/tasks/next", json!({})).await?.0,
        StatusCode::NO_CONTENT,
        "the dialer that agreed the call back has it first"
    );
    let (_, batch) = s.post(&dialer, "/dialer/batches", json!({})).await?;
    let got: Vec<i64> = batch["tasks"]
        .as_array()
        .ok_or("tasks")?
        .iter()
        .filter_map(|t| t["id"].as_i64())
        .collect();
    assert_eq!(got, vec![ids[0]], "{batch}");
    let (_, res) = s
        .post(
            &dialer,
            "/dialer/outcomes",
            json!({"outcomes": [{"task": ids[0], "outcome": "accepted"}]}),
        )
        .await?;
    assert_eq!(res, json!([{"task": ids[0], "result": "recorded"}]));
    assert_eq!(s.outcomes().await?, 1);
    Ok(())
}

/// The teams file as the daemon read it at start: `TEAM` with agent-1 and dialer-1.
fn roster() -> Arc<api::CallTeams> {
    Arc::new(api::CallTeams {
        file: "workflows/teams.yaml".into(),
        teams: [(
            TEAM.to_owned(),
            api::CallTeam {
                agents: vec!["agent-1".into(), "dialer-1".into()],
                timezone: "Asia/Shanghai".into(),
            },
        )]
        .into(),
    })
}

// api `calls.rs` `on_roster`: an agent token works its team's queue only while its name is
// in the team's `agents` as read at daemon start; one removed from the file (its token and
// its hold from before the restart still there) is refused on every queue route, and its
// task is left as it was.
#[tokio::test]
async fn an_agent_removed_from_its_team_in_teams_yaml_is_refused_on_every_queue_route() -> Res {
    let (s, ids, other) = Server::start_opts(
        &[150.0, 900.0, 400.0],
        api::ServeOptions {
            call_teams: Some(roster()),
            ..api::ServeOptions::default()
        },
    )
    .await?;
    let a1 = s.token("agent-1", Role::Agent, Some(TEAM)).await?;
    let gone = s.token("agent-9", Role::Agent, Some(TEAM)).await?;
    let stranger = s.token("desk-1", Role::Agent, Some("other")).await?;
    // agent-9 took a task before it was removed from the file and the daemon restarted.
    let held = s
        .store
        .claim_tasks(TEAM, "agent-9", 1, T0 + 15 * MINUTE, T0)
        .await?;
    assert_eq!(held.len(), 1);
    let mine = held[0].id;
    assert_eq!(mine, ids[1]);

    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339()
    };
    s.set(T0 + MINUTE);
    for (path, body) in [
        ("/tasks/next".to_owned(), json!({})),
        (format!("/tasks/{mine}/hold"), json!({})),
        (
            format!("/tasks/{mine}/callback"),
            json!({"at": iso(T0 + HOUR)}),
        ),
        (
            format!("/tasks/{mine}/outcome"),
            json!({"outcome": "accepted"}),
        ),
        (
            format!("/tasks/{mine}/outcome"),
            json!({"outcome": "call_back_later", "call_back_at": iso(T0 + HOUR)}),
        ),
        ("/dialer/batches".to_owned(), json!({"size": 5})),
        (
            "/dialer/outcomes".to_owned(),
            json!({"outcomes": [{"task": mine, "outcome": "accepted"}]}),
        ),
    ] {
        let (st, resp) = s.post(&gone, &path, body).await?;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}: {resp}");
        let msg = resp["error"].as_str().unwrap_or("");
        assert!(
            msg.contains(
                "agent agent-9 is not in team callcentre's agents in workflows/teams.yaml (agent-1, dialer-1)"
            ),
            "{path}: {msg}"
        );
    }
    // It holds nothing new, and its old hold was neither renewed nor recorded.
    let after = s.store.tasks(Some(TEAM), TaskState::Open, 100).await?;
    let by_gone: Vec<_> = after
        .iter()
        .filter(|t| t.held_by.as_deref() == Some("agent-9"))
        .collect();
    assert_eq!(by_gone.len(), 1, "{by_gone:?}");
    assert_eq!(
        (by_gone[0].id, by_gone[0].held_until, by_gone[0].callback_at),
        (mine, Some(T0 + 15 * MINUTE), None)
    );
    assert_eq!(s.outcomes().await?, 0, "nothing recorded");

    // An agent of a team the file does not declare has no queue.
    let (st, resp) = s.post(&stranger, "/tasks/next", json!({})).await?;
    assert_eq!(st, StatusCode::FORBIDDEN, "{resp}");
    assert!(
        resp["error"]
            .as_str()
            .unwrap_or("")
            .contains("team other of agent desk-1 is not a call-centre team of workflows/teams.yaml (callcentre)"),
        "{resp}"
    );
    assert_eq!(
        s.post(&stranger, &format!("/tasks/{other}/hold"), json!({}))
            .await?
            .0,
        StatusCode::FORBIDDEN
    );

    // An agent in the file works as ever.
    let (st, t) = s.post(&a1, "/tasks/next", json!({})).await?;
    assert_eq!((st, &t["id"]), (StatusCode::OK, &json!(ids[2])), "{t}");
    let (st, r) = s
        .post(
            &a1,
            &format!("/tasks/{}/outcome", ids[2]),
            json!({"outcome": "accepted"}),
        )
        .await?;
    assert_eq!(st, StatusCode::OK, "{r}");
    Ok(())
}
