//! The HTTP API over real HTTP (127.0.0.1, port 0) against a migrated database (SQLite, or
//! PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`).

use std::time::Duration;

use api::AppState;
use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use store::Store;
use store::inbound::{InboundRow, count_unprocessed};
use store::subscribers::OnDuplicate;
use store::testing::RawDb as _;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The callback secret of these tests' servers.
const SECRET: &[u8] = b"http-tests-callback-secret";

struct Server {
    base: String,
    store: Store,
    /// Tokens of an admin (most routes) and a gateway (the MO callback).
    admin: String,
    gateway: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

impl Server {
    async fn start() -> Res<Server> {
        Server::start_with(None).await
    }

    async fn start_with(now: Option<api::Now>) -> Res<Server> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        // SQLite by default; CAMPAIGND_TEST_BACKEND=postgres runs the suite on PostgreSQL.
        let store = store::testing::fresh_store(dir.path()).await?;
        let listener = api::bind("127.0.0.1:0".parse()?)?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let state = AppState {
            store: store.clone(),
        };
        let shutdown = async move {
            let _ = stopped.await;
        };
        let opts = api::ServeOptions {
            now: now.unwrap_or_else(|| std::sync::Arc::new(store::wall_now)),
            callbacks: api::auth::CallbackAuth {
                dlr_secret: Some(store::auth::Secret::new(SECRET.to_vec())?),
                ..Default::default()
            },
            ..api::ServeOptions::default()
        };
        let served = tokio::spawn(api::serve_with(listener, state, opts, shutdown));
        let t = store::wall_now();
        let admin = store
            .create_token("admin", store::auth::Role::Admin, None, t)
            .await?;
        let gateway = store
            .create_token("kannel", store::auth::Role::Gateway, None, t)
            .await?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Server {
            base,
            store,
            admin,
            gateway,
            client,
            stop: Some(stop),
            served: Some(served),
            _dir: dir,
        })
    }

    /// The bearer token a test request carries: Kannel's for the MO callback, an admin's
    /// elsewhere.
    fn token_for(&self, path: &str) -> &str {
        if path.starts_with("/callbacks/kannel/mo") {
            &self.gateway
        } else {
            &self.admin
        }
    }

    async fn get(&self, path: &str) -> Res<(StatusCode, String)> {
        let path = sign_dlr(path);
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token_for(&path))
            .send()
            .await?;
        Ok((resp.status(), resp.text().await?))
    }

    async fn post(&self, path: &str, body: impl Into<String>) -> Res<(StatusCode, String)> {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token_for(path))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await?;
        Ok((resp.status(), resp.text().await?))
    }

    async fn inbound_count(&self) -> Res<u64> {
        Ok(count_unprocessed(self.store.db()).await?)
    }

    async fn inbound(&self) -> Res<Vec<InboundRow>> {
        Ok(self.store.unprocessed_inbound(100_000).await?)
    }

    async fn payload(&self, id: i64) -> Res<Value> {
        let sql = format!("SELECT payload FROM inbound WHERE id = {id}");
        let row = self
            .store
            .db()
            .query_one_raw(store::stmt(self.store.db(), &sql, []))
            .await?
            .ok_or("no row")?;
        Ok(serde_json::from_str(
            &row.try_get::<String>("", "payload")?,
        )?)
    }

    /// Asserts a 400 naming `field`, and that nothing was stored by it.
    async fn assert_rejected(
        &self,
        (status, body): (StatusCode, String),
        field: &str,
        inbound_before: u64,
    ) -> Res {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let v: Value = serde_json::from_str(&body)?;
        assert_eq!(v["field"], field, "{body}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
        assert_eq!(
            self.inbound_count().await?,
            inbound_before,
            "a rejected request wrote nothing: {body}"
        );
        Ok(())
    }

    async fn stop(mut self) -> Res {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await??;
        }
        Ok(())
    }
}

/// A DLR path as campaignd signs it: `t`, the key's token, added (unless the path has one).
fn sign_dlr(path: &str) -> String {
    let Some(query) = path.strip_prefix("/callbacks/kannel/dlr?") else {
        return path.to_owned();
    };
    let params: Vec<&str> = query.split('&').collect();
    let key = params.iter().find_map(|p| p.strip_prefix("key="));
    match key {
        Some(key) if !key.is_empty() && !params.iter().any(|p| p.starts_with("t=")) => {
            let secret = store::auth::Secret::new(SECRET.to_vec()).expect("secret");
            format!("{path}&t={}", store::auth::callback_token(&secret, key))
        }
        _ => path.to_owned(),
    }
}

/// Gives the first contact (seeding one when there is none) the key `key`: the DLR callback
/// stores reports for keys it sent only.
async fn known_key(store: &Store, key: &str) -> Res {
    if store
        .tasks(None, store::inbound::TaskState::Open, 1)
        .await?
        .is_empty()
    {
        seed_tasks(store).await?;
    }
    store
        .db()
        .execute_raw(store::stmt(
            store.db(),
            "UPDATE contact SET idem_key = ? WHERE id = (SELECT MIN(id) FROM contact)",
            [key.into()],
        ))
        .await?;
    Ok(())
}

/// A run with an open call wave and one open task per team; returns (run id, task ids).
async fn seed_tasks(store: &Store) -> Res<(i64, Vec<i64>)> {
    let now = store::wall_now();
    let subs = [
        store::testing::subscriber("13800000001"),
        store::testing::subscriber("13800000002"),
    ];
    let wave =
        store::testing::call_wave(store, "autumn", &subs, "gold", now, now + 86_400_000).await?;
    let run_id = wave.run_id;
    // The retention team's workflow declares its own outcomes; the campus task is one opened
    // before tasks carried theirs (the shipped four).
    let declared = vec!["accepted".to_owned(), "wants_visit".to_owned()];
    let rows: Vec<_> = wave
        .contacts
        .iter()
        .zip(["campus-callcentre", "retention"])
        .map(|(c, team)| {
            // The retention team's task has an SLA and was due an hour ago.
            let sla = team == "retention";
            store::inbound::NewTask {
                due_at: sla.then_some(now - 3_600_000),
                escalate_to: sla.then_some("retention-lead"),
                outcomes: if sla { &declared } else { &[] },
                ..c.task(team, "campus-bundle-v2")
            }
        })
        .collect();
    store.open_tasks(&rows, now).await?;
    let mut ids: Vec<i64> = store
        .tasks(None, store::inbound::TaskState::Open, 10)
        .await?
        .iter()
        .map(|t| t.id)
        .collect();
    // In the order they were opened: campus-callcentre's, then retention's.
    ids.sort_unstable();
    Ok((run_id, ids))
}

#[tokio::test]
async fn healthz_answers_ok_and_503_once_the_database_is_gone() -> Res {
    let s = Server::start().await?;
    assert_eq!(s.get("/healthz").await?, (StatusCode::OK, "ok".to_owned()));
    s.store.clone().close().await?;
    let (status, _) = s.get("/healthz").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    s.stop().await
}

/// The seeded tasks' contacts, each given the idempotency key `k-<id>`; their ids in order.
async fn keyed_contacts(store: &store::Store) -> Res<Vec<i64>> {
    seed_tasks(store).await?;
    store
        .db()
        .execute_raw(store::stmt(
            store.db(),
            "UPDATE contact SET idem_key = 'k-' || CAST(id AS TEXT)",
            [],
        ))
        .await?;
    Ok(store
        .db()
        .query_all_raw(store::stmt(
            store.db(),
            "SELECT id FROM contact ORDER BY id",
            [],
        ))
        .await?
        .iter()
        .map(|r| r.try_get::<i64>("", "id"))
        .collect::<Result<_, _>>()?)
}

/// Reports arriving together are each answered for themselves: every known key's report
/// stored once per request, every unknown key refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_delivery_reports_are_each_stored_or_refused() -> Res {
    let s = Server::start().await?;
    let ids = keyed_contacts(&s.store).await?;
    assert!(ids.len() >= 2, "{ids:?}");
    let s = std::sync::Arc::new(s);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..120usize {
        let key = match i % 3 {
            0 => format!("k-{}", ids[0]),
            1 => format!("k-{}", ids[1]),
            _ => format!("nope-{i}"),
        };
        let s = s.clone();
        tasks.spawn(async move {
            let path = format!(
                "/callbacks/kannel/dlr?key={key}&type=8&smscid=FAKE&to=13800138000&reply=n{i}"
            );
            (i, s.get(&path).await.map_err(|e| e.to_string()))
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (i, res) = r?;
        let (status, body) = res?;
        let want = if i % 3 == 2 {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::OK
        };
        assert_eq!(status, want, "report {i}: {body}");
    }
    let rows = s.inbound().await?;
    let per_key = |k: &str| {
        rows.iter()
            .filter(|r| r.idem_key.as_deref() == Some(k))
            .count()
    };
    assert_eq!(rows.len(), 80, "only the known keys' reports");
    assert_eq!(per_key(&format!("k-{}", ids[0])), 40);
    assert_eq!(per_key(&format!("k-{}", ids[1])), 40);
    let mut values: Vec<String> = rows.iter().filter_map(|r| r.value.clone()).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 80, "each request's own row");
    std::sync::Arc::try_unwrap(s)
        .map_err(|_| "server still shared")?
        .stop()
        .await
}

#[tokio::test]
async fn dlr_callback_is_stored_with_its_query_as_payload() -> Res {
    let s = Server::start().await?;
    known_key(&s.store, "r12-sms_offer-s345").await?;
    let (status, body) = s
        .get("/callbacks/kannel/dlr?key=r12-sms_offer-s345&type=1&smscid=FAKE&fid=c08d4205&to=%2B8613800138000&ts=1795393517&reply=")
        .await?;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let (status, _) = s.get("/callbacks/kannel/dlr?key=r12-sms_offer-s345&type=8&smscid=FAKE&fid=&to=13800138000&reply=ACK/").await?;
    assert_eq!(status, StatusCode::OK);

    let rows = s.inbound().await?;
    assert_eq!(rows.len(), 2);
    let (delivered, ack) = (&rows[0], &rows[1]);
    assert_eq!(delivered.source, "dlr");
    assert_eq!(delivered.idem_key.as_deref(), Some("r12-sms_offer-s345"));
    assert_eq!(delivered.msisdn.as_deref(), Some("13800138000"));
    assert_eq!(delivered.kind, "1");
    assert_eq!(delivered.value, None);
    assert!((store::wall_now() - delivered.received_at).abs() < 60_000);
    assert_eq!(ack.kind, "8");
    assert_eq!(ack.value.as_deref(), Some("ACK/"));
    let payload = s.payload(delivered.id).await?;
    assert_eq!(payload["smscid"], "FAKE");
    assert_eq!(payload["ts"], "1795393517");
    assert_eq!(payload["to"], "+8613800138000");
    s.stop().await
}

/// The SMSC's acknowledgement (type 8) of a contact this process settled `sent`
/// (`Store::sent_keys`) is answered without a write; every other report is stored as
/// before, and the token and the input are checked first all the same.
#[tokio::test]
async fn an_smsc_ack_of_a_contact_settled_sent_here_is_not_stored() -> Res {
    let s = Server::start().await?;
    let ids = keyed_contacts(&s.store).await?;
    let (settled, other) = (format!("k-{}", ids[0]), format!("k-{}", ids[1]));
    s.store.sent_keys().insert([settled.as_str()]);
    let ok = (StatusCode::OK, "ok".to_owned());

    assert_eq!(
        s.get(&format!(
            "/callbacks/kannel/dlr?key={settled}&type=8&to=13800138000&reply=ACK/"
        ))
        .await?,
        ok
    );
    assert_eq!(
        s.inbound_count().await?,
        0,
        "the acknowledgement is not stored"
    );
    // Forged or malformed: refused as before, not answered `ok`.
    let (status, _) = s
        .get(&format!("/callbacks/kannel/dlr?key={settled}&type=8&t=00"))
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .get(&format!("/callbacks/kannel/dlr?key={settled}&type=8&to=x"))
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The final report of the same contact, and another contact's acknowledgement: stored.
    assert_eq!(
        s.get(&format!(
            "/callbacks/kannel/dlr?key={settled}&type=1&to=13800138000"
        ))
        .await?,
        ok
    );
    assert_eq!(
        s.get(&format!(
            "/callbacks/kannel/dlr?key={other}&type=8&to=13800138000"
        ))
        .await?,
        ok
    );
    let rows = s.inbound().await?;
    let stored: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.idem_key.as_deref().unwrap_or(""), r.kind.as_str()))
        .collect();
    assert_eq!(stored, [(settled.as_str(), "1"), (other.as_str(), "8")]);
    s.stop().await
}

#[tokio::test]
async fn dlr_callback_rejects_bad_input_and_writes_nothing() -> Res {
    let s = Server::start().await?;
    let cases = [
        ("type=1&to=13800138000", "key"),
        ("key=&type=1", "key"),
        ("key=r1-w-s1", "type"),
        ("key=r1-w-s1&type=3", "type"),
        ("key=r1-w-s1&type=delivered", "type"),
        ("key=r1-w-s1&type=1&type=2", "type"),
        ("key=r1-w-s1&type=1&to=abc", "to"),
    ];
    for (query, field) in cases {
        s.assert_rejected(
            s.get(&format!("/callbacks/kannel/dlr?{query}")).await?,
            field,
            0,
        )
        .await?;
    }
    s.stop().await
}

#[tokio::test]
async fn mo_callback_is_stored_with_a_national_number_and_decoded_text() -> Res {
    let s = Server::start().await?;
    let urls = [
        "/callbacks/kannel/mo?from=%2B8613800138000&to=10086&text=YES+please&kw=YES&msgid=abc&ts=2026-11-23+00:25:17&charset=UTF-8",
        "/callbacks/kannel/mo?from=8613800138001&to=10086&text=%E9%80%80%E8%AE%A2",
        // Kannel without mo-recode: the text is UTF-16BE bytes.
        "/callbacks/kannel/mo?from=13800138002&to=10086&text=%60%A8Y%7D&coding=2&charset=UTF-16BE",
    ];
    for url in urls {
        assert_eq!(
            s.get(url).await?,
            (StatusCode::OK, "ok".to_owned()),
            "{url}"
        );
    }
    let rows = s.inbound().await?;
    let got: Vec<(&str, Option<&str>, &str, Option<&str>)> = rows
        .iter()
        .map(|r| {
            (
                r.source.as_str(),
                r.msisdn.as_deref(),
                r.kind.as_str(),
                r.value.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("mo", Some("13800138000"), "reply", Some("YES please")),
            ("mo", Some("13800138001"), "reply", Some("退订")),
            ("mo", Some("13800138002"), "reply", Some("您好")),
        ]
    );
    assert_eq!(rows[0].idem_key, None);
    let payload = s.payload(rows[2].id).await?;
    assert_eq!(payload["text"], "您好");
    assert_eq!(payload["coding"], "2");
    s.stop().await
}

#[tokio::test]
async fn mo_callback_rejects_bad_input_and_writes_nothing() -> Res {
    let s = Server::start().await?;
    let cases = [
        ("to=10086&text=hi", "from"),
        ("from=&text=hi", "from"),
        ("from=abc&text=hi", "from"),
        ("from=1234&text=hi", "from"),
        ("from=123456789012345678901&text=hi", "from"),
        ("from=13800138000&to=10086", "text"),
        ("from=13800138000&text=", "text"),
        ("from=13800138000&text=%FF%FE", "text"),
        ("from=13800138000&text=hi&charset=EBCDIC", "charset"),
        ("from=13800138000&from=13800138001&text=hi", "from"),
    ];
    for (query, field) in cases {
        s.assert_rejected(
            s.get(&format!("/callbacks/kannel/mo?{query}")).await?,
            field,
            0,
        )
        .await?;
    }
    s.stop().await
}

/// An event feed posting while the database is down is told to come back (503 with
/// `Retry-After`), not that its request was wrong or that something broke for good.
#[tokio::test]
async fn events_posted_while_the_database_is_down_get_503_with_retry_after() -> Res {
    let s = Server::start().await?;
    let event = json!({"msisdn": "13800138000", "type": "order"}).to_string();
    // Confirms the token, so the check passes on (fail static) while the database is away.
    assert_eq!(
        s.post("/events", event.clone()).await?.0,
        StatusCode::ACCEPTED
    );
    s.store.clone().close().await?;
    let resp = s
        .client
        .post(format!("{}/events", s.base))
        .bearer_auth(s.token_for("/events"))
        .header("content-type", "application/json")
        .body(event)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert!(resp.text().await?.contains("retry"));
    s.stop().await
}

#[tokio::test]
async fn events_are_stored_singly_and_in_batches() -> Res {
    let s = Server::start().await?;
    let (status, body) = s
        .post(
            "/events",
            json!({"msisdn": "13800138000", "type": "order", "value": "campus-bundle"}).to_string(),
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        json!({"accepted": 1, "already": 0})
    );

    let batch = json!([
        {"msisdn": "+8613800138001", "type": "topup", "value": "50", "at": "2026-09-01T10:00:00+08:00"},
        {"msisdn": "13800138002", "type": "order", "at": "2026-09-01T02:00:00Z", "value": null},
    ]);
    let (status, body) = s.post("/events", batch.to_string()).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        json!({"accepted": 2, "already": 0})
    );

    let rows = s.inbound().await?;
    assert_eq!(rows.len(), 3);
    assert_eq!(
        (
            rows[0].source.as_str(),
            rows[0].kind.as_str(),
            rows[0].value.as_deref()
        ),
        ("event", "order", Some("campus-bundle"))
    );
    assert!((store::wall_now() - rows[0].received_at).abs() < 60_000);
    assert_eq!(rows[1].msisdn.as_deref(), Some("13800138001"));
    assert_eq!(
        rows[1].received_at, 1_788_228_000_000,
        "the event's own time"
    );
    assert_eq!(rows[2].received_at, 1_788_228_000_000);
    assert_eq!(rows[2].value, None);
    assert_eq!(s.payload(rows[1].id).await?["type"], "topup");
    s.stop().await
}

#[tokio::test]
async fn events_reject_bad_input_and_write_nothing() -> Res {
    let s = Server::start().await?;
    let good = json!({"msisdn": "13800138000", "type": "order", "value": "campus-bundle"});
    let too_many: Vec<Value> = (0..10_001).map(|_| good.clone()).collect();
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "body"),
        (
            json!({"msisdn": "13800138000", "type": "order", "colour": "red"}).to_string(),
            "colour",
        ),
        (
            json!([good, {"msisdn": "13800138000", "type": "order", "colour": "red"}]).to_string(),
            "[1].colour",
        ),
        (
            json!([good, good, {"msisdn": "13800138000"}]).to_string(),
            "[2].type",
        ),
        (
            json!({"msisdn": 13800138000u64, "type": "order"}).to_string(),
            "msisdn",
        ),
        (
            json!({"msisdn": "phone", "type": "order"}).to_string(),
            "msisdn",
        ),
        (
            json!({"msisdn": "13800138000", "type": "big order"}).to_string(),
            "type",
        ),
        (
            json!({"msisdn": "13800138000", "type": "reply"}).to_string(),
            "type",
        ),
        (
            json!({"msisdn": "13800138000", "type": "order", "value": ""}).to_string(),
            "value",
        ),
        (
            json!({"msisdn": "13800138000", "type": "order", "at": "yesterday"}).to_string(),
            "at",
        ),
        (
            json!({"msisdn": "13800138000", "type": "order", "at": future}).to_string(),
            "at",
        ),
        (json!([good, 5]).to_string(), "[1]"),
        ("[]".into(), "body"),
        ("\"order\"".into(), "body"),
        (Value::Array(too_many).to_string(), "body"),
    ];
    for (body, field) in cases {
        s.assert_rejected(s.post("/events", body).await?, field, 0)
            .await?;
    }
    s.stop().await
}

/// `POST /events` keeps the event of a known subscriber in its event log even when no
/// campaign is running (nothing to attribute it to), beside the inbound row attribution reads;
/// an unknown number is stored for attribution only, and a malformed batch changes nothing.
#[tokio::test]
async fn events_of_subscribers_outside_any_campaign_are_kept() -> Res {
    let s = Server::start().await?;
    let t = store::wall_now();
    s.store
        .insert_subscribers(
            &[store::testing::subscriber("13800138000")],
            OnDuplicate::Fail,
            t,
        )
        .await?;
    let id = s
        .store
        .subscriber_by_msisdn("13800138000")
        .await?
        .ok_or("no subscriber")?;
    let batch = json!([
        {"msisdn": "+8613800138000", "type": "bill_query"},
        {"msisdn": "13800138000", "type": "topup", "value": "30", "at": "2026-09-01T10:00:00+08:00"},
        {"msisdn": "13800138000", "type": "bill_query", "at": "2026-09-01T11:00:00+08:00"},
        {"msisdn": "13900139000", "type": "bill_query"},
    ]);
    let (status, body) = s.post("/events", batch.to_string()).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        json!({"accepted": 4, "already": 0}),
        "the unknown number is accepted as before"
    );
    assert_eq!(s.inbound_count().await?, 4, "all four wait for attribution");
    assert_eq!(s.store.count_events(id, "bill_query", 0).await?, 2);
    let events = s.store.events_of(id, 0).await?;
    assert_eq!(events.len(), 3);
    assert_eq!(
        (events[0].kind.as_str(), events[0].at, events[0].value),
        ("topup", 1_788_228_000_000, Some(30.0)),
        "the event's own time, its amount"
    );
    assert!(
        events
            .iter()
            .all(|e| e.source == store::events::EventSource::Api)
    );

    // Malformed (one bad event in the batch): 400, no inbound row, no event.
    let bad = json!([
        {"msisdn": "13800138000", "type": "bill_query"},
        {"msisdn": "13800138000", "type": "bill query"},
    ]);
    s.assert_rejected(s.post("/events", bad.to_string()).await?, "[1].type", 4)
        .await?;
    assert_eq!(s.store.count_events(id, "bill_query", 0).await?, 2);
    assert_eq!(s.store.events_of(id, 0).await?.len(), 3);

    // The same event posted again (a retried request): neither attribution nor the
    // subscriber's log stores it twice, and the answer says it was already there.
    let again = json!({"msisdn": "13800138000", "type": "topup", "value": "30", "at": "2026-09-01T10:00:00+08:00"});
    let (status, body) = s.post("/events", again.to_string()).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        json!({"accepted": 1, "already": 1})
    );
    assert_eq!(s.inbound_count().await?, 4);
    assert_eq!(s.store.count_events(id, "topup", 0).await?, 1);
    assert_eq!(s.store.events_of(id, 0).await?.len(), 3);
    s.stop().await
}

/// A retried `POST /events` (the same body sent twice, as a feed does when it lost the first
/// answer) stores one inbound row and one event row per event, and the second answer counts
/// them as already there. Guards `record_business_events`' event key and the unique index
/// of migration m20261205_000022_event_inbound_once.
#[tokio::test]
async fn a_retried_events_request_stores_each_event_once() -> Res {
    let s = Server::start().await?;
    let t = store::wall_now();
    s.store
        .insert_subscribers(
            &[store::testing::subscriber("13800138000")],
            OnDuplicate::Fail,
            t,
        )
        .await?;
    let id = s
        .store
        .subscriber_by_msisdn("13800138000")
        .await?
        .ok_or("no subscriber")?;
    let one = json!({"msisdn": "13800138000", "type": "order", "value": "campus-bundle", "at": "2026-09-01T10:00:00+08:00"});
    let (status, body) = s.post("/events", one.to_string()).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        json!({"accepted": 1, "already": 0})
    );
    let (status, body) = s.post("/events", one.to_string()).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        json!({"accepted": 1, "already": 1})
    );
    assert_eq!(s.inbound_count().await?, 1, "one inbound row");
    assert_eq!(s.store.events_of(id, 0).await?.len(), 1, "one event row");

    // A batch repeating it, with a new event and an unknown number (attribution only),
    // then the same batch again.
    let batch = json!([
        one,
        {"msisdn": "13800138000", "type": "order", "value": "campus-bundle", "at": "2026-09-01T11:00:00+08:00"},
        {"msisdn": "13900139000", "type": "order", "at": "2026-09-01T10:00:00+08:00"},
    ]);
    let (_, body) = s.post("/events", batch.to_string()).await?;
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        json!({"accepted": 3, "already": 1})
    );
    let (_, body) = s.post("/events", batch.to_string()).await?;
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        json!({"accepted": 3, "already": 3})
    );
    assert_eq!(s.inbound_count().await?, 3);
    assert_eq!(s.store.events_of(id, 0).await?.len(), 2);
    s.stop().await
}

#[tokio::test]
async fn worklist_lists_tasks_by_team_and_state() -> Res {
    let s = Server::start().await?;
    let (_, ids) = seed_tasks(&s.store).await?;

    let (status, body) = s.get("/tasks?team=campus-callcentre").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tasks: Value = serde_json::from_str(&body)?;
    assert_eq!(tasks.as_array().map(Vec::len), Some(1));
    let t = &tasks[0];
    assert_eq!(t["id"], ids[0]);
    assert_eq!(t["team"], "campus-callcentre");
    assert_eq!(t["kind"], "outbound_call");
    assert_eq!(t["script"], "campus-bundle-v2");
    assert_eq!(t["state"], "open");
    assert_eq!(t["outcome"], Value::Null);
    assert!(t["contact_id"].is_i64() && t["subscriber_id"].is_i64());

    assert_eq!(t["due_at"], Value::Null);
    assert_eq!(t["overdue"], false);

    // The soonest due first: the retention task, overdue, then the one without an SLA.
    let all: Value = serde_json::from_str(&s.get("/tasks").await?.1)?;
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    assert_eq!(all[0]["id"], ids[1]);
    assert!(all[0]["due_at"].is_i64());
    assert_eq!(all[0]["overdue"], true);
    assert_eq!(all[0]["escalate_to"], "retention-lead");
    assert_eq!(all[0]["escalated_at"], Value::Null);
    assert_eq!(all[1]["id"], ids[0]);
    let one: Value = serde_json::from_str(&s.get("/tasks?state=open&limit=1").await?.1)?;
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    let done: Value = serde_json::from_str(&s.get("/tasks?state=done").await?.1)?;
    assert_eq!(done, json!([]));

    for (query, field) in [
        ("state=closed", "state"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("limit=1001", "limit"),
        ("colour=red", "colour"),
    ] {
        s.assert_rejected(s.get(&format!("/tasks?{query}")).await?, field, 0)
            .await?;
    }
    s.stop().await
}

#[tokio::test]
async fn task_outcome_completes_once_then_conflicts() -> Res {
    let s = Server::start().await?;
    let (_, ids) = seed_tasks(&s.store).await?;
    let path = format!("/tasks/{}/outcome", ids[0]);

    let rejected = [
        (
            json!({"outcome": "maybe", "agent": "agent-7"}).to_string(),
            "outcome",
        ),
        (json!({"agent": "agent-7"}).to_string(), "outcome"),
        (json!({"outcome": "accepted"}).to_string(), "agent"),
        (
            json!({"outcome": "accepted", "agent": "agent \"7\""}).to_string(),
            "agent",
        ),
        (
            json!({"outcome": "accepted", "agent": "agent-7", "note": "x"}).to_string(),
            "note",
        ),
        ("accepted".into(), "body"),
    ];
    for (body, field) in rejected {
        s.assert_rejected(s.post(&path, body).await?, field, 0)
            .await?;
    }
    s.assert_rejected(
        s.post(
            "/tasks/abc/outcome",
            json!({"outcome": "accepted", "agent": "a"}).to_string(),
        )
        .await?,
        "id",
        0,
    )
    .await?;
    assert_eq!(
        s.store
            .tasks(None, store::inbound::TaskState::Open, 10)
            .await?
            .len(),
        2,
        "rejected outcomes closed nothing"
    );

    let body = json!({"outcome": "accepted", "agent": "agent-7"}).to_string();
    let (status, resp) = s.post(&path, body.clone()).await?;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let rows = s.inbound().await?;
    assert_eq!(rows.len(), 1, "the outcome is queued for attribution");
    assert_eq!(
        (rows[0].source.as_str(), rows[0].value.as_deref()),
        ("task", Some("accepted"))
    );
    let done = s
        .store
        .tasks(None, store::inbound::TaskState::Done, 10)
        .await?;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].outcome.as_deref(), Some("accepted"));

    let (status, resp) = s.post(&path, body.clone()).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{resp}");
    assert!(serde_json::from_str::<Value>(&resp)?["error"].is_string());
    let (status, _) = s.post("/tasks/999999/outcome", body).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(s.inbound_count().await?, 1);
    s.stop().await
}

/// Guards api `tasks.rs::outcome` (the task's own `outcomes`, copied from its workflow by
/// the worklist channel): an outcome the workflow declares is taken, one it does not is a
/// 400 naming the task's list, and a task without a list takes the shipped four.
#[tokio::test]
async fn a_task_takes_only_its_workflows_outcomes() -> Res {
    let s = Server::start().await?;
    let (_, ids) = seed_tasks(&s.store).await?;
    let post = |id: i64, outcome: &str| {
        (
            format!("/tasks/{id}/outcome"),
            json!({"outcome": outcome, "agent": "agent-7"}).to_string(),
        )
    };
    let (path, body) = post(ids[1], "refused");
    let (status, resp) = s.post(&path, body).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert!(
        resp.contains("expected one of this task's outcomes: accepted, wants_visit"),
        "{resp}"
    );
    let (path, body) = post(ids[0], "wants_visit");
    let (status, resp) = s.post(&path, body).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert!(resp.contains("call_back_later"), "{resp}");
    assert_eq!(s.inbound_count().await?, 0, "nothing recorded");

    let (path, body) = post(ids[1], "wants_visit");
    let (status, resp) = s.post(&path, body).await?;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (path, body) = post(ids[0], "call_back_later");
    let (status, resp) = s.post(&path, body).await?;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(s.inbound_count().await?, 2);
    s.stop().await
}

#[tokio::test]
async fn run_report_is_served_as_stored() -> Res {
    let s = Server::start().await?;
    let (run_id, _) = seed_tasks(&s.store).await?;
    let path = format!("/runs/{run_id}/report");
    let (status, body) = s.get(&path).await?;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an active run has no report yet: {body}"
    );

    let report = r#"{"campaign":"autumn","uplift":0.042}"#;
    assert!(
        s.store
            .finish_run(run_id, report, store::wall_now())
            .await?
    );
    let resp = s
        .client
        .get(format!("{}{path}", s.base))
        .bearer_auth(&s.admin)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get("content-type").map(|v| v.to_str().ok()),
        Some(Some("application/json"))
    );
    assert_eq!(resp.text().await?, report);

    assert_eq!(s.get("/runs/999/report").await?.0, StatusCode::NOT_FOUND);
    s.assert_rejected(s.get("/runs/-3/report").await?, "id", 0)
        .await?;
    let (status, body) = s.get("/no/such/route").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(serde_json::from_str::<Value>(&body)?["error"].is_string());
    s.stop().await
}

#[tokio::test]
async fn inbound_events_are_stamped_with_the_engines_clock() -> Res {
    // A demo clock two months behind the wall clock, as the engine's scaled clock may be.
    const CLOCK: i64 = 1_788_000_000_000;
    let s = Server::start_with(Some(std::sync::Arc::new(|| CLOCK))).await?;
    let (_, ids) = seed_tasks(&s.store).await?;
    known_key(&s.store, "r1-w-s1").await?;
    assert_eq!(
        s.get("/callbacks/kannel/dlr?key=r1-w-s1&type=1").await?.0,
        StatusCode::OK
    );
    assert_eq!(
        s.get("/callbacks/kannel/mo?from=13800138000&text=1")
            .await?
            .0,
        StatusCode::OK
    );
    let event = json!({"msisdn": "13800138000", "type": "order"}).to_string();
    assert_eq!(s.post("/events", event).await?.0, StatusCode::ACCEPTED);
    let outcome = json!({"outcome": "refused", "agent": "a1"}).to_string();
    assert_eq!(
        s.post(&format!("/tasks/{}/outcome", ids[0]), outcome)
            .await?
            .0,
        StatusCode::OK
    );
    let stamps: Vec<(String, i64)> = s
        .inbound()
        .await?
        .into_iter()
        .map(|r| (r.source, r.received_at))
        .collect();
    let want: Vec<(String, i64)> = ["dlr", "mo", "event", "task"]
        .iter()
        .map(|src| ((*src).to_owned(), CLOCK))
        .collect();
    assert_eq!(stamps, want);

    // "In the future" is judged by that clock too: an hour past it is refused although it
    // is long past by the wall clock.
    let ahead = chrono::DateTime::from_timestamp_millis(CLOCK + 3_600_000)
        .ok_or("time")?
        .to_rfc3339();
    let future = json!({"msisdn": "13800138000", "type": "order", "at": ahead}).to_string();
    s.assert_rejected(s.post("/events", future).await?, "at", 4)
        .await?;
    s.stop().await
}

#[tokio::test]
async fn bound_listener_queues_a_burst_of_connections() -> Res {
    // Nothing accepts here: every connection must wait in the listen backlog. With tokio's
    // default backlog (128) the SYNs past it are dropped and these connects time out.
    let listener = api::bind("127.0.0.1:0".parse()?)?;
    let addr = listener.local_addr()?;
    let mut open = Vec::new();
    for i in 0..300 {
        let conn =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await;
        match conn {
            Ok(Ok(stream)) => open.push(stream),
            other => return Err(format!("connection {i} was not queued: {other:?}").into()),
        }
    }
    assert_eq!(open.len(), 300);
    drop(listener);
    Ok(())
}

#[tokio::test]
async fn a_subscribers_story_is_served_masked() -> Res {
    let s = Server::start().await?;
    let (run_id, _) = seed_tasks(&s.store).await?;
    let (status, body) = s
        .get("/subscribers/+8613800000001/story?campaign=autumn")
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !body.contains("13800000001"),
        "the number is masked: {body}"
    );
    let v: Value = serde_json::from_str(&body)?;
    assert_eq!(v["msisdn"], "138****0001");
    let steps = v["steps"].as_array().ok_or("steps")?;
    assert_eq!(steps.len(), 1, "{body}");
    assert_eq!(steps[0]["campaign"], "autumn");
    assert_eq!(steps[0]["run_id"], run_id);
    assert_eq!(steps[0]["wave"], "call");
    assert_eq!(steps[0]["outcome"], "contacted");
    assert_eq!(steps[0]["channel"], "outbound_call");
    assert_eq!(steps[0]["purpose"], "marketing");
    let (status, body) = s
        .get("/subscribers/13800000001/story?campaign=other")
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body)?["steps"],
        Value::Array(vec![])
    );

    let (status, body) = s.get("/subscribers/13999999999/story").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("139****9999") && !body.contains("13999999999"),
        "{body}"
    );
    s.assert_rejected(s.get("/subscribers/12ab/story").await?, "msisdn", 0)
        .await?;
    s.assert_rejected(
        s.get("/subscribers/13800000001/story?campaign=a&x=1")
            .await?,
        "x",
        0,
    )
    .await?;
    s.stop().await
}

/// The alert worklist: open alerts with numbers masked, filtered by owner and state; an
/// outcome is recorded (and may be replaced), bad input changes nothing.
#[tokio::test]
async fn alerts_are_listed_masked_and_take_outcomes() -> Res {
    let s = Server::start().await?;
    let now = store::wall_now();
    s.store
        .insert_subscribers(
            &[
                store::testing::subscriber("13800000001"),
                store::testing::subscriber("13800000002"),
            ],
            OnDuplicate::Fail,
            now,
        )
        .await?;
    let a = s
        .store
        .subscriber_by_msisdn("13800000001")
        .await?
        .ok_or("sub")?;
    let b = s
        .store
        .subscriber_by_msisdn("13800000002")
        .await?
        .ok_or("sub")?;
    let tx = s
        .store
        .begin_monitor_eval("watch", now, now)
        .await?
        .ok_or("slot")?;
    let episode = |id, owner| store::alerts::NewEpisode {
        subscriber_id: id,
        level: "high",
        level_rank: 1,
        score: 70,
        signals: "spending_down".into(),
        owner,
    };
    assert_eq!(tx.open(&[episode(a, "west"), episode(b, "desk")]).await?, 2);
    tx.commit(store::alerts::EvalCounts::default()).await?;

    let (status, body) = s.get("/alerts?owner=west").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !body.contains("13800000001"),
        "the number is masked: {body}"
    );
    let list: Vec<Value> = serde_json::from_str(&body)?;
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["msisdn"], "138****0001");
    assert_eq!(list[0]["level"], "high");
    assert_eq!(list[0]["state"], "open");
    let id = list[0]["id"].as_i64().ok_or("id")?;
    let (_, all) = s.get("/alerts").await?;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&all)?.len(), 2);
    let (_, closed) = s.get("/alerts?state=closed").await?;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&closed)?.len(), 0);

    let path = format!("/alerts/{id}/outcome");
    let (status, body) = s
        .post(&path, r#"{"outcome": "contacted", "by": "li.wei"}"#)
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = s
        .post(&path, r#"{"outcome": "retained", "by": "li.wei"}"#)
        .await?;
    assert_eq!(status, StatusCode::OK);
    for (bad_body, field) in [
        (r#"{"outcome": "saved", "by": "li.wei"}"#, "outcome"),
        (r#"{"outcome": "lost", "by": "li wei"}"#, "by"),
        (r#"{"outcome": "lost"}"#, "by"),
    ] {
        let (status, body) = s.post(&path, bad_body).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad_body}: {body}");
        assert!(body.contains(field), "{bad_body}: {body}");
    }
    let (status, _) = s
        .post(
            "/alerts/999999/outcome",
            r#"{"outcome": "lost", "by": "x"}"#,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, body) = s.get("/alerts?owner=west").await?;
    let list: Vec<Value> = serde_json::from_str(&body)?;
    assert_eq!(list[0]["outcome"], "retained", "the later outcome stands");
    assert_eq!(list[0]["outcome_by"], "li.wei");
    let (status, _) = s.get("/alerts?state=gone").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s.get("/alerts?limit=0").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    s.stop().await
}
