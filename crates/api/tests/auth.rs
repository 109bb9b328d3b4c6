//! Authentication and roles over real HTTP: the whole route × principal matrix, forged and
//! unsigned callbacks, team-bound agents, four-eyes approval and the callback allowlists.
//! SQLite, or PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`.

use std::collections::BTreeSet;
use std::time::Duration;

use api::AppState;
use api::auth::{CallbackAuth, Cidr};
use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use store::Store;
use store::auth::{Role, Secret};
use store::testing::RawDb as _;
use tempfile::TempDir;
use tokio::sync::oneshot;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const SECRET: &[u8] = b"auth-tests-callback-secret-0123";
const TEAM: &str = "campus-callcentre";
const OTHER_TEAM: &str = "retention";

/// The principals of the matrix, in its column order.
const WHO: [&str; 8] = [
    "admin", "operator", "approver", "analyst", "agent", "gateway", "none", "revoked",
];

/// Every route of `api::route_table()` with the answer each principal gets. A route added
/// without a row here fails `every_route_answers_every_principal_as_the_table_says`.
/// The requests are ones an allowed caller gets a non-auth answer to (e.g. 404 for a run
/// that does not exist), so the table shows exactly where authorization stops a caller.
#[rustfmt::skip]
const MATRIX: &[(&str, &str, [u16; 8])] = &[
    //                                     admin oper  appr  anal  agent gate  none  revoked
    ("GET",  "/livez",                    [200,  200,  200,  200,  200,  200,  200,  200]),
    ("GET",  "/readyz",                   [200,  200,  200,  200,  200,  200,  200,  200]),
    ("GET",  "/healthz",                  [200,  200,  200,  200,  200,  200,  200,  200]),
    ("GET",  "/openapi.json",             [200,  200,  200,  200,  200,  200,  200,  200]),
    // The agents' page and its assets hold no data; its calls carry the agent's token.
    ("GET",  "/agent",                    [200,  200,  200,  200,  200,  200,  200,  200]),
    ("GET",  "/agent/app.js",             [200,  200,  200,  200,  200,  200,  200,  200]),
    ("GET",  "/agent/app.css",            [200,  200,  200,  200,  200,  200,  200,  200]),
    // Only the per-message signature authenticates a delivery report; no role does.
    ("GET",  "/callbacks/kannel/dlr",     [401,  401,  401,  401,  401,  401,  401,  401]),
    ("GET",  "/callbacks/kannel/mo",      [403,  403,  403,  403,  403,  200,  401,  401]),
    ("POST", "/events",                   [202,  202,  403,  403,  403,  202,  401,  401]),
    ("GET",  "/tasks",                    [200,  200,  403,  403,  200,  403,  401,  401]),
    ("POST", "/tasks/{id}/outcome",       [400,  400,  403,  403,  400,  403,  401,  401]),
    // The queue holds tasks for the caller: agent (and dialer) tokens only.
    ("POST", "/tasks/next",               [403,  403,  403,  403,  200,  403,  401,  401]),
    ("POST", "/tasks/{id}/callback",      [403,  403,  403,  403,  400,  403,  401,  401]),
    ("POST", "/tasks/{id}/hold",          [403,  403,  403,  403,  404,  403,  401,  401]),
    ("POST", "/dialer/batches",           [403,  403,  403,  403,  200,  403,  401,  401]),
    ("POST", "/dialer/outcomes",          [403,  403,  403,  403,  400,  403,  401,  401]),
    ("GET",  "/alerts",                   [200,  200,  403,  403,  200,  403,  401,  401]),
    ("POST", "/alerts/{id}/outcome",      [404,  404,  403,  403,  404,  403,  401,  401]),
    ("GET",  "/runs/{id}/report",         [404,  404,  404,  404,  403,  403,  401,  401]),
    ("GET",  "/campaigns/{id}/seasons",   [404,  404,  404,  404,  403,  403,  401,  401]),
    ("GET",  "/subscribers/{msisdn}/story", [404, 404,  403,  404,  403,  403,  401,  401]),
    ("POST", "/versions/{id}/approve",    [404,  403,  404,  403,  403,  403,  401,  401]),
    ("GET",  "/audit",                    [200,  403,  403,  403,  403,  403,  401,  401]),
];

struct Server {
    base: String,
    store: Store,
    client: reqwest::Client,
    /// Token per principal of [`WHO`] ("none" has none).
    tokens: Vec<(String, Option<String>)>,
    stop: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

impl Server {
    async fn start() -> Res<Server> {
        Server::start_with(CallbackAuth {
            dlr_secret: Some(Secret::new(SECRET.to_vec())?),
            ..Default::default()
        })
        .await
    }

    async fn start_with(callbacks: CallbackAuth) -> Res<Server> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let store = store::testing::fresh_store(dir.path()).await?;
        let listener = api::bind("127.0.0.1:0".parse()?)?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let opts = api::ServeOptions {
            callbacks,
            ..api::ServeOptions::default()
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
        let now = store::wall_now();
        let mut tokens = Vec::new();
        for who in WHO {
            let token = match who {
                "none" => None,
                "revoked" => {
                    let t = store
                        .create_token("revoked", Role::Operator, None, now)
                        .await?;
                    assert!(store.revoke_token("revoked", now).await?);
                    Some(t)
                }
                "agent" => Some(
                    store
                        .create_token("agent", Role::Agent, Some(TEAM), now)
                        .await?,
                ),
                role => Some(
                    store
                        .create_token(role, Role::parse(role).ok_or("role")?, None, now)
                        .await?,
                ),
            };
            tokens.push((who.to_owned(), token));
        }
        Ok(Server {
            base,
            store,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            tokens,
            stop: Some(stop),
            _dir: dir,
        })
    }

    fn token(&self, who: &str) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(w, _)| w == who)
            .and_then(|(_, t)| t.as_deref())
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        who: &str,
        body: Option<String>,
    ) -> Res<(StatusCode, String)> {
        let mut req = self
            .client
            .request(method.parse()?, format!("{}{path}", self.base));
        if let Some(t) = self.token(who) {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await?;
        Ok((resp.status(), resp.text().await?))
    }

    async fn get(&self, path: &str, who: &str) -> Res<(StatusCode, String)> {
        self.call("GET", path, who, None).await
    }

    async fn count(&self, table: &str) -> Res<i64> {
        let sql = format!("SELECT COUNT(*) AS n FROM {table}");
        let row = self
            .store
            .db()
            .query_one_raw(store::stmt(self.store.db(), &sql, []))
            .await?
            .ok_or("no row")?;
        Ok(row.try_get::<i64>("", "n")?)
    }

    /// Rows of everything a request could write.
    async fn written(&self) -> Res<[i64; 3]> {
        Ok([
            self.count("inbound").await?,
            self.count("audit_log").await?,
            self.count("agent_task WHERE state = 'done'").await?,
        ])
    }

    fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn sign(key: &str) -> String {
    store::auth::callback_token(&Secret::new(SECRET.to_vec()).expect("secret"), key)
}

/// A run with an open call wave and one open task per team; returns (key of the first
/// contact, task of `TEAM`, task of `OTHER_TEAM`).
async fn seed(store: &Store) -> Res<(String, i64, i64)> {
    let now = store::wall_now();
    let subs = [
        store::testing::subscriber("13800000001"),
        store::testing::subscriber("13800000002"),
    ];
    let wave =
        store::testing::call_wave(store, "autumn", &subs, "gold", now, now + 86_400_000).await?;
    let rows: Vec<_> = wave
        .contacts
        .iter()
        .zip([TEAM, OTHER_TEAM])
        .map(|(c, team)| c.task(team, "campus-bundle-v2"))
        .collect();
    let keys: Vec<String> = wave.contacts.iter().map(|c| c.key.clone()).collect();
    store.open_tasks(&rows, now).await?;
    let tasks = store
        .tasks(None, store::inbound::TaskState::Open, 10)
        .await?;
    let of = |team: &str| {
        tasks
            .iter()
            .find(|t| t.team == team)
            .map(|t| t.id)
            .ok_or("task")
    };
    Ok((keys[0].clone(), of(TEAM)?, of(OTHER_TEAM)?))
}

#[tokio::test]
async fn every_route_answers_every_principal_as_the_table_says() -> Res {
    let s = Server::start().await?;
    let (key, own_task, _) = seed(&s.store).await?;

    // The table covers exactly the routes the router serves.
    let served: BTreeSet<(String, String)> = api::route_table()
        .into_iter()
        .map(|(m, p, _)| (m.to_string(), p.to_owned()))
        .collect();
    let tabled: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        served, tabled,
        "every route needs a row in MATRIX (and every row a route)"
    );

    let mut wrong = Vec::new();
    for (method, route, expected) in MATRIX {
        let path = match *route {
            "/callbacks/kannel/dlr" => format!("{route}?key={key}&type=1"),
            "/callbacks/kannel/mo" => format!("{route}?from=13800138000&text=hi"),
            "/tasks/{id}/outcome" => route.replace("{id}", &own_task.to_string()),
            r => r
                .replace("{id}", "999999")
                .replace("{msisdn}", "13999999999"),
        };
        for (i, who) in WHO.iter().enumerate() {
            let body = match *route {
                "/events" => Some(json!({"msisdn": "13800138000", "type": "order"}).to_string()),
                "/tasks/{id}/outcome" => Some("{}".to_owned()),
                _ => None,
            };
            let before = s.written().await?;
            let (status, text) = s.call(method, &path, who, body).await?;
            if status.as_u16() != expected[i] {
                wrong.push(format!(
                    "{method} {route} as {who}: {status}, expected {} ({text})",
                    expected[i]
                ));
            }
            if matches!(status.as_u16(), 401 | 403) {
                assert_eq!(
                    s.written().await?,
                    before,
                    "{method} {route} as {who} was refused but wrote something"
                );
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    s.stop();
    Ok(())
}

#[tokio::test]
async fn delivery_reports_without_the_right_token_change_nothing() -> Res {
    let s = Server::start().await?;
    let (key, _, _) = seed(&s.store).await?;
    let (other_key, _, _) = (format!("{key}x"), 0, 0);
    let foreign =
        store::auth::callback_token(&Secret::new(b"another-secret-of-16-bytes".to_vec())?, &key);
    let cases = [
        format!("key={key}&type=1"),
        format!("key={key}&type=1&t="),
        format!("key={key}&type=1&t=00000000000000000000000000000000"),
        format!("key={key}&type=1&t={}", sign(&other_key)),
        format!("key={key}&type=1&t={foreign}"),
        format!("key={key}&type=1&t={}", &sign(&key)[..31]),
    ];
    for q in &cases {
        // A bearer token of any role is no substitute for the signature.
        let (status, body) = s
            .get(&format!("/callbacks/kannel/dlr?{q}"), "admin")
            .await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{q}: {body}");
    }
    assert_eq!(s.count("inbound").await?, 0, "a refused report was stored");
    let (status, _) = s
        .get(
            &format!("/callbacks/kannel/dlr?key={key}&t={}&type=1", sign(&key)),
            "none",
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.count("inbound").await?, 1);
    let payload: String = {
        let row = s
            .store
            .db()
            .query_one_raw(store::stmt(s.store.db(), "SELECT payload FROM inbound", []))
            .await?
            .ok_or("row")?;
        row.try_get("", "payload")?
    };
    assert!(
        !payload.contains(&sign(&key)),
        "the token was stored: {payload}"
    );
    s.stop();
    Ok(())
}

#[tokio::test]
async fn a_signed_report_for_an_unknown_key_is_refused_and_stores_nothing() -> Res {
    let s = Server::start().await?;
    seed(&s.store).await?;
    for n in 0..50 {
        let key = format!("r1-call-s{n}-aaaaaaaaaaaa");
        let (status, _) = s
            .get(
                &format!("/callbacks/kannel/dlr?key={key}&t={}&type=1", sign(&key)),
                "none",
            )
            .await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{key}");
    }
    assert_eq!(
        s.count("inbound").await?,
        0,
        "reports for unknown keys were stored"
    );
    s.stop();
    Ok(())
}

#[tokio::test]
async fn without_a_secret_every_delivery_report_is_refused() -> Res {
    let s = Server::start_with(CallbackAuth::default()).await?;
    let (key, _, _) = seed(&s.store).await?;
    let (status, _) = s
        .get(
            &format!("/callbacks/kannel/dlr?key={key}&t={}&type=1", sign(&key)),
            "none",
        )
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.count("inbound").await?, 0);
    s.stop();
    Ok(())
}

#[tokio::test]
async fn kannel_may_send_its_gateway_token_in_the_query_and_it_is_not_stored() -> Res {
    let s = Server::start().await?;
    let token = s.token("gateway").ok_or("token")?.to_owned();
    let (status, body) = s
        .get(
            &format!("/callbacks/kannel/mo?from=13800138000&text=TD&token={token}"),
            "none",
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = s
        .get(
            "/callbacks/kannel/mo?from=13800138000&text=TD&token=cdt_forged",
            "none",
        )
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Another role's token in the query is no gateway token.
    let operator = s.token("operator").ok_or("token")?.to_owned();
    let (status, _) = s
        .get(
            &format!("/callbacks/kannel/mo?from=13800138000&text=TD&token={operator}"),
            "none",
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let rows = s.store.unprocessed_inbound(10).await?;
    assert_eq!(rows.len(), 1, "only the gateway's reply is stored");
    let payload: String = s
        .store
        .db()
        .query_one_raw(store::stmt(s.store.db(), "SELECT payload FROM inbound", []))
        .await?
        .ok_or("row")?
        .try_get("", "payload")?;
    assert!(!payload.contains(&token), "the token was stored: {payload}");
    s.stop();
    Ok(())
}

#[tokio::test]
async fn an_agent_reads_and_completes_its_own_teams_tasks_only() -> Res {
    let s = Server::start().await?;
    let (_, own, other) = seed(&s.store).await?;
    let (status, body) = s.get("/tasks", "agent").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tasks: Value = serde_json::from_str(&body)?;
    let teams: Vec<&str> = tasks
        .as_array()
        .ok_or("array")?
        .iter()
        .filter_map(|t| t["team"].as_str())
        .collect();
    assert_eq!(
        teams,
        vec![TEAM],
        "an agent saw another team's call scripts"
    );
    let (status, _) = s.get(&format!("/tasks?team={OTHER_TEAM}"), "agent").await?;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let outcome = json!({"outcome": "accepted", "agent": "agent"}).to_string();
    let (status, _) = s
        .call(
            "POST",
            &format!("/tasks/{other}/outcome"),
            "agent",
            Some(outcome.clone()),
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(s.count("agent_task WHERE state = 'done'").await?, 0);
    let (status, body) = s
        .call(
            "POST",
            &format!("/tasks/{own}/outcome"),
            "agent",
            Some(outcome),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Both the read and the outcome are on the record, under the agent's name.
    let audit = s.store.audit_since(0).await?;
    let by_agent: Vec<&str> = audit
        .iter()
        .filter(|e| e.principal == "agent")
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(by_agent, vec!["read_tasks", "outcome"], "{audit:?}");
    s.stop();
    Ok(())
}

#[tokio::test]
async fn a_version_is_approved_by_another_principal_only() -> Res {
    let s = Server::start().await?;
    let now = store::wall_now();
    let v = s
        .store
        .upsert_version("autumn", "abc", "campaign: autumn", now)
        .await?;
    // The approver principal authored this version.
    s.store.set_loaded_by(v, "approver").await?;
    let path = format!("/versions/{v}/approve");
    let (status, body) = s.call("POST", &path, "approver", None).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "four eyes: {body}");
    assert_eq!(
        s.store.version_approval(v).await?.ok_or("v")?.approved_by,
        None
    );
    // Someone else with the right role may; once.
    let bob = s
        .store
        .create_token("bob", Role::Approver, None, now)
        .await?;
    let approve = || {
        s.client
            .post(format!("{}{path}", s.base))
            .bearer_auth(&bob)
            .send()
    };
    assert_eq!(approve().await?.status(), StatusCode::OK);
    let approval = s.store.version_approval(v).await?.ok_or("v")?;
    assert_eq!(approval.approved_by.as_deref(), Some("bob"));
    assert_eq!(approve().await?.status(), StatusCode::CONFLICT);
    let audit = s.store.audit_since(0).await?;
    assert!(
        audit
            .iter()
            .any(|e| e.principal == "bob" && e.action == "approve"),
        "{audit:?}"
    );
    s.stop();
    Ok(())
}

#[tokio::test]
async fn callbacks_from_outside_their_allowlist_are_refused() -> Res {
    let outside = Server::start_with(CallbackAuth {
        dlr_secret: Some(Secret::new(SECRET.to_vec())?),
        dlr_allow: vec![Cidr::parse("10.0.0.0/8")?],
        mo_allow: vec![Cidr::parse("192.168.0.0/16")?],
    })
    .await?;
    let (key, _, _) = seed(&outside.store).await?;
    let dlr = format!("/callbacks/kannel/dlr?key={key}&t={}&type=1", sign(&key));
    let mo = "/callbacks/kannel/mo?from=13800138000&text=hi";
    assert_eq!(outside.get(&dlr, "none").await?.0, StatusCode::FORBIDDEN);
    assert_eq!(outside.get(mo, "gateway").await?.0, StatusCode::FORBIDDEN);
    // The allowlists apply to the callbacks only.
    assert_eq!(outside.get("/tasks", "admin").await?.0, StatusCode::OK);
    assert_eq!(outside.count("inbound").await?, 0);
    outside.stop();

    let inside = Server::start_with(CallbackAuth {
        dlr_secret: Some(Secret::new(SECRET.to_vec())?),
        dlr_allow: vec![Cidr::parse("127.0.0.0/8")?],
        mo_allow: vec![Cidr::parse("127.0.0.1")?],
    })
    .await?;
    let (key, _, _) = seed(&inside.store).await?;
    let dlr = format!("/callbacks/kannel/dlr?key={key}&t={}&type=1", sign(&key));
    assert_eq!(inside.get(&dlr, "none").await?.0, StatusCode::OK);
    assert_eq!(inside.get(mo, "gateway").await?.0, StatusCode::OK);
    inside.stop();
    Ok(())
}

#[tokio::test]
async fn the_openapi_document_names_the_bearer_scheme() -> Res {
    let s = Server::start().await?;
    let (status, body) = s.get("/openapi.json", "none").await?;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&body)?;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    s.stop();
    Ok(())
}
