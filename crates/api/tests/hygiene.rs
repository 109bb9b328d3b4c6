//! The server's bounds against slow and greedy clients, and the probes, over real TCP
//! (127.0.0.1, port 0) against a migrated database (SQLite, or PostgreSQL with
//! `CAMPAIGND_TEST_BACKEND=postgres`). Raw sockets where a test must misbehave as a client.
//! No assertion depends on timing: each waits on a condition with a generous deadline.

use std::time::Duration;

use api::{AppState, Limits, ServeOptions};
use reqwest::StatusCode;
use serde_json::Value;
use store::Store;
use store::testing::RawDb as _;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Longer than any bound under test: reaching it means the bound did not work.
const DEADLINE: Duration = Duration::from_secs(30);

struct Server {
    addr: std::net::SocketAddr,
    base: String,
    store: Store,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
    /// Bearer tokens: an admin's for most routes, a gateway's for the MO callback.
    admin: String,
    gateway: String,
    /// An agent's, for the call-centre queue's routes (agents and dialers only).
    agent: String,
}

/// Limits that never fire in a test unless it sets them low.
fn relaxed() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(60),
        body_read_timeout: Duration::from_secs(60),
        max_in_flight: 64,
        max_connections: 256,
        shutdown_grace: Duration::from_secs(60),
        stall_after: Duration::from_secs(600),
    }
}

impl Server {
    async fn start(limits: Limits) -> Res<Server> {
        Server::start_opts(ServeOptions {
            limits,
            ..ServeOptions::default()
        })
        .await
    }

    async fn start_opts(opts: ServeOptions) -> Res<Server> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let store = store::testing::fresh_store(dir.path()).await?;
        let listener = api::bind("127.0.0.1:0".parse()?)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let state = AppState {
            store: store.clone(),
        };
        let served = tokio::spawn(api::serve_with(listener, state, opts, async move {
            let _ = stopped.await;
        }));
        let t = store::wall_now();
        let admin = store
            .create_token("admin", store::auth::Role::Admin, None, t)
            .await?;
        let gateway = store
            .create_token("kannel", store::auth::Role::Gateway, None, t)
            .await?;
        let agent = store
            .create_token("agent", store::auth::Role::Agent, Some("callcentre"), t)
            .await?;
        Ok(Server {
            admin,
            gateway,
            agent,
            addr,
            base: format!("http://{addr}"),
            store,
            client: reqwest::Client::builder().timeout(DEADLINE).build()?,
            stop: Some(stop),
            served: Some(served),
            _dir: dir,
        })
    }

    fn token_for(&self, path: &str) -> &str {
        if path.starts_with("/callbacks/kannel/mo") {
            &self.gateway
        } else if path.starts_with("/dialer/")
            || path == "/tasks/next"
            || (path.starts_with("/tasks/")
                && (path.ends_with("/callback") || path.ends_with("/hold")))
        {
            &self.agent
        } else {
            &self.admin
        }
    }

    async fn get(&self, path: &str) -> Res<(StatusCode, String)> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token_for(path))
            .send()
            .await?;
        Ok((resp.status(), resp.text().await?))
    }

    async fn json(&self, path: &str) -> Res<(StatusCode, Value)> {
        let (status, body) = self.get(path).await?;
        Ok((status, serde_json::from_str(&body)?))
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> Res<StatusCode> {
        let resp = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token_for(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Ok(resp.status())
    }

    /// Asks the server to stop; returns its task to await.
    fn begin_stop(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.served.take().expect("server running")
    }

    async fn stop(mut self) -> Res {
        let served = self.begin_stop();
        tokio::time::timeout(DEADLINE, served).await???;
        Ok(())
    }

    /// A raw connection that has sent the head of a POST and `sent` of its `len` body bytes.
    async fn held_post(&self, path: &str, len: usize, sent: usize) -> Res<TcpStream> {
        let mut tcp = TcpStream::connect(self.addr).await?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
            self.token_for(path)
        );
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(&vec![b' '; sent]).await?;
        tcp.flush().await?;
        Ok(tcp)
    }

    /// Waits until `/livez` shows `n` requests in flight.
    async fn wait_in_flight(&self, n: u64) -> Res {
        let until = Instant::now() + DEADLINE;
        loop {
            let (_, v) = self.json("/livez").await?;
            if v["http"]["in_flight"] == n {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!("never {n} requests in flight: {v}").into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Reads until the peer closes; the bytes read, or an error when `DEADLINE` passes first.
async fn read_to_close(tcp: &mut TcpStream) -> Res<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Ok(String::from_utf8_lossy(&out).into_owned()),
        // A reset is a close too.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(format!(
            "the server kept the connection open for {DEADLINE:?}; got so far: {:?}",
            String::from_utf8_lossy(&out)
        )
        .into()),
    }
}

/// The status code of a raw HTTP/1.1 response.
fn status_of(raw: &str) -> Option<u16> {
    raw.split(' ').nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_client_that_stalls_in_its_headers_is_disconnected() -> Res {
    let s = Server::start(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..relaxed()
    })
    .await?;
    let mut tcp = TcpStream::connect(s.addr).await?;
    // Half a header, then nothing.
    tcp.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await?;
    let started = Instant::now();
    let got = read_to_close(&mut tcp).await?;
    assert!(
        got.is_empty() || status_of(&got) == Some(408),
        "no request was answered: {got:?}"
    );
    // The timeout, not the deadline of this test, closed it.
    assert!(started.elapsed() < DEADLINE);
    // And the server still serves others.
    assert_eq!(s.get("/livez").await?.0, StatusCode::OK);
    s.stop().await
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() -> Res {
    let s = Server::start(Limits {
        body_read_timeout: Duration::from_millis(300),
        ..relaxed()
    })
    .await?;
    let mut tcp = s.held_post("/events", 100, 10).await?;
    let got = read_to_close(&mut tcp).await?;
    assert_eq!(status_of(&got), Some(408), "{got}");
    assert_eq!(
        store::inbound::count_unprocessed(s.store.db()).await?,
        0,
        "nothing stored"
    );
    s.stop().await
}

/// Sends `head` then `body` on a fresh connection; the response head. The body is sent whole
/// before reading, so the server never closes on bytes it left unread (which would reset
/// the connection and lose its answer).
async fn raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> Res<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body).await?;
    read_head(&mut tcp).await
}

#[tokio::test]
async fn each_route_refuses_a_body_over_its_own_limit_with_413() -> Res {
    let s = Server::start(relaxed()).await?;
    for (method, path, limit) in api::route_table() {
        let path = path.replace("{id}", "1");
        // Declared too large: refused before a byte of the body is read.
        let auth = s.token_for(&path);
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {auth}\r\nContent-Length: {}\r\n\r\n",
            limit + 1
        );
        let got = raw(s.addr, &head, b"").await?;
        assert_eq!(status_of(&got), Some(413), "{method} {path}: {got}");
        // Not declared (chunked): refused once the bytes read pass the limit.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {auth}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            limit + 1
        );
        let got = raw(s.addr, &head, &vec![b' '; limit + 1]).await?;
        assert_eq!(status_of(&got), Some(413), "{method} {path} chunked: {got}");
        // At the limit the body reaches the handler (which may still refuse it as JSON).
        let m = reqwest::Method::from_bytes(method.as_str().as_bytes())?;
        let status = s.send(m, &path, vec![b' '; limit]).await?;
        assert_ne!(status, StatusCode::PAYLOAD_TOO_LARGE, "{method} {path}");
    }
    // The limits differ per route: a 100 KiB batch of events is stored.
    let event = r#"{"msisdn": "13800138000", "type": "order", "value": "campus-bundle"}"#;
    let batch = format!("[{}]", vec![event; 1500].join(","));
    assert!(batch.len() > 25 * api::SMALL_BODY);
    assert_eq!(
        s.send(reqwest::Method::POST, "/events", batch.into_bytes())
            .await?,
        StatusCode::ACCEPTED
    );
    let small: Vec<usize> = api::route_table()
        .iter()
        .filter(|(_, p, _)| p.starts_with("/callbacks") || p.starts_with("/tasks"))
        .map(|(_, _, l)| *l)
        .collect();
    assert!(small.iter().all(|l| *l == api::SMALL_BODY), "{small:?}");
    s.stop().await
}

#[tokio::test]
async fn past_the_in_flight_limit_requests_get_503_and_probes_still_answer() -> Res {
    const N: usize = 3;
    let s = Server::start(Limits {
        max_in_flight: N,
        ..relaxed()
    })
    .await?;
    // N requests held open: each has sent its head and half its body.
    let mut held = Vec::new();
    for _ in 0..N {
        held.push(s.held_post("/events", 80, 40).await?);
    }
    s.wait_in_flight(N as u64).await?;
    let (status, body) = s.get("/tasks").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        s.send(reqwest::Method::POST, "/events", b"{}".to_vec())
            .await?,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        s.get("/livez").await?.0,
        StatusCode::OK,
        "probes are exempt"
    );
    assert_eq!(s.get("/readyz").await?.0, StatusCode::OK);

    // One held request completes (its JSON is bad: 400); its slot frees.
    let mut first = held.remove(0);
    first.write_all(&[b' '; 40]).await?;
    let got = read_head(&mut first).await?;
    assert_eq!(status_of(&got), Some(400), "{got}");
    s.wait_in_flight(N as u64 - 1).await?;
    assert_eq!(s.get("/tasks").await?.0, StatusCode::OK);
    drop(held);
    s.stop().await
}

/// Reads a response head (until the blank line).
async fn read_head(tcp: &mut TcpStream) -> Res<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let until = Instant::now() + DEADLINE;
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(until, tcp.read(&mut buf)).await??;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() -> Res {
    let mut s = Server::start(relaxed()).await?;
    let event = br#"{"msisdn": "13800138000", "type": "order"}"#;
    let mut tcp = s.held_post("/events", event.len(), 0).await?;
    s.wait_in_flight(1).await?;
    let served = s.begin_stop();
    // New connections are refused once shutdown began.
    let until = Instant::now() + DEADLINE;
    while TcpStream::connect(s.addr).await.is_ok() {
        assert!(Instant::now() < until, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !served.is_finished(),
        "the request in flight holds the server"
    );
    tcp.write_all(event).await?;
    let got = read_to_close(&mut tcp).await?;
    assert_eq!(status_of(&got), Some(202), "{got}");
    tokio::time::timeout(DEADLINE, served).await???;
    assert_eq!(store::inbound::count_unprocessed(s.store.db()).await?, 1);
    Ok(())
}

#[tokio::test]
async fn shutdown_waits_no_longer_than_its_grace() -> Res {
    let mut s = Server::start(Limits {
        shutdown_grace: Duration::from_millis(300),
        ..relaxed()
    })
    .await?;
    // A client that never finishes its body.
    let mut tcp = s.held_post("/events", 100, 10).await?;
    s.wait_in_flight(1).await?;
    let served = s.begin_stop();
    tokio::time::timeout(DEADLINE, served)
        .await
        .map_err(|_| "the server waited past its grace for a stalled request")???;
    // Its connection was closed, without an answer.
    let got = read_to_close(&mut tcp).await?;
    assert!(got.is_empty(), "{got}");
    Ok(())
}

/// ops.rs `readyz` (`gateways: p.gateways...`): a paused gateway is shown to the operator,
/// and does not make the API unready (callbacks must still be taken).
#[tokio::test]
async fn readyz_shows_a_paused_gateway_and_stays_ready() -> Res {
    let s = Server::start_opts(ServeOptions {
        limits: relaxed(),
        gateways: Some(std::sync::Arc::new(|| {
            vec![api::GatewayHealth {
                channel: "sms".into(),
                breaker: "forced_open".into(),
                reason: Some("Kannel answered HTTP 403: Authorization failed".into()),
                start_check: Some("ok".into()),
            }]
        })),
        ..ServeOptions::default()
    })
    .await?;
    let (status, ready) = s.json("/readyz").await?;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(
        ready["gateways"],
        serde_json::json!([{
            "channel": "sms",
            "breaker": "forced_open",
            "reason": "Kannel answered HTTP 403: Authorization failed",
            "start_check": "ok",
        }])
    );
    s.stop().await
}

#[tokio::test]
async fn readyz_fails_without_the_database_while_livez_stays_ok() -> Res {
    let sup = supervise::Supervisor::new();
    sup.register("housekeeping").beat();
    let s = Server::start_opts(ServeOptions {
        limits: relaxed(),
        supervisor: sup.clone(),
        expect_engine: true,
        ..ServeOptions::default()
    })
    .await?;
    let (status, ready) = s.json("/readyz").await?;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(
        ready["checks"],
        serde_json::json!({"database": "ok", "migrations": "ok", "engine": "ok"})
    );

    s.store.clone().close().await?;
    let (status, ready) = s.json("/readyz").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["checks"]["database"], "unreachable");
    let (status, live) = s.json("/livez").await?;
    assert_eq!(status, StatusCode::OK, "{live}");
    assert_eq!(live["status"], "alive");
    let names: Vec<&str> = live["tasks"]
        .as_array()
        .ok_or("no tasks")?
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["api:accept", "housekeeping"], "{live}");
    s.stop().await
}

#[tokio::test]
async fn readyz_fails_while_a_migration_of_this_build_is_pending() -> Res {
    let s = Server::start(relaxed()).await?;
    assert_eq!(s.get("/readyz").await?.0, StatusCode::OK);
    let db = s.store.db();
    let newest = "m20261126_000007_late_attribution";
    sea_orm::ConnectionTrait::execute_unprepared(
        db,
        &format!("DELETE FROM seaql_migrations WHERE version = '{newest}'"),
    )
    .await?;
    let (status, ready) = s.json("/readyz").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["checks"]["migrations"], format!("pending: {newest}"));
    // A migration this build does not know (a newer release ran it) is no reason to stop.
    sea_orm::ConnectionTrait::execute_unprepared(
        db,
        &format!(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('{newest}', 0), ('m29990101_000001_future', 0)"
        ),
    )
    .await?;
    assert_eq!(s.get("/readyz").await?.0, StatusCode::OK);
    s.stop().await
}

#[tokio::test]
async fn readiness_waits_for_the_engine_and_liveness_fails_on_a_stalled_loop() -> Res {
    let sup = supervise::Supervisor::new();
    let s = Server::start_opts(ServeOptions {
        limits: Limits {
            stall_after: Duration::from_secs(1),
            ..relaxed()
        },
        supervisor: sup.clone(),
        expect_engine: true,
        ..ServeOptions::default()
    })
    .await?;
    let (status, ready) = s.json("/readyz").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["checks"]["engine"], "not started");

    let hb = sup.register("housekeeping");
    hb.beat();
    // A loop that stops turning: liveness fails once the stall bound passes.
    let until = Instant::now() + DEADLINE;
    loop {
        let (status, live) = s.json("/livez").await?;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                live["stalled"]
                    .as_array()
                    .is_some_and(|a| a.contains(&Value::from("housekeeping"))),
                "{live}"
            );
            break;
        }
        assert!(
            Instant::now() < until,
            "a stalled loop never failed liveness"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hb.beat();
    assert_eq!(s.get("/livez").await?.0, StatusCode::OK);
    s.stop().await
}

const SECRET: &[u8] = b"hygiene-tests-callback-secret-01";

/// `n` subscribers with a contact each in an open wave; returns (msisdn, contact key).
async fn contacts(store: &Store, n: usize) -> Res<Vec<(String, String)>> {
    let now = store::wall_now();
    let msisdns: Vec<String> = (0..n).map(|i| format!("1380010{i:04}")).collect();
    let subs: Vec<_> = msisdns
        .iter()
        .map(|m| store::testing::subscriber(m))
        .collect();
    let wave =
        store::testing::call_wave(store, "autumn", &subs, "all", now, now + 86_400_000).await?;
    Ok(msisdns
        .into_iter()
        .zip(wave.contacts)
        .map(|(m, c)| (m, c.key))
        .collect())
}

/// Guards the callback inbox (group commit, and callbacks' own bound): with every
/// `max_in_flight` slot held, a burst of delivery reports and replies many times that
/// bound is still taken, each callback answered for itself whatever group it was stored
/// with: every report of a known key stored once per request, every unknown key refused,
/// every reply stored. Before the inbox, the burst past the bound got 503s and a gateway
/// that does not retry lost those reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_each_stored_or_refused_past_the_in_flight_limit() -> Res {
    const N: usize = 2;
    const BURST: usize = 400;
    let secret = store::auth::Secret::new(SECRET.to_vec())?;
    let s = Server::start_opts(ServeOptions {
        limits: Limits {
            max_in_flight: N,
            max_connections: 2 * BURST,
            ..relaxed()
        },
        callbacks: api::auth::CallbackAuth {
            dlr_secret: Some(secret.clone()),
            ..Default::default()
        },
        ..ServeOptions::default()
    })
    .await?;
    let contacts = contacts(&s.store, 40).await?;
    let mut held = Vec::new();
    for _ in 0..N {
        held.push(s.held_post("/events", 80, 40).await?);
    }
    s.wait_in_flight(N as u64).await?;
    assert_eq!(
        s.get("/tasks").await?.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "ordinary routes are shed"
    );

    let s = std::sync::Arc::new(s);
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..BURST {
        let (msisdn, key) = contacts[i % contacts.len()].clone();
        let path = match i % 4 {
            0 => format!("/callbacks/kannel/mo?from={msisdn}&to=10086&text=m{i}"),
            1 => {
                let key = format!("nope-{i}");
                let t = store::auth::callback_token(&secret, &key);
                format!("/callbacks/kannel/dlr?key={key}&t={t}&type=1&to={msisdn}")
            }
            _ => {
                let t = store::auth::callback_token(&secret, &key);
                format!("/callbacks/kannel/dlr?key={key}&t={t}&type=8&to={msisdn}&reply=d{i}")
            }
        };
        let s = s.clone();
        burst.spawn(async move { (i, s.get(&path).await.map_err(|e| e.to_string())) });
    }
    while let Some(r) = burst.join_next().await {
        let (i, res) = r?;
        let (status, body) = res?;
        let want = if i % 4 == 1 {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::OK
        };
        assert_eq!(status, want, "callback {i}: {body}");
    }
    let rows = s.store.unprocessed_inbound(100_000).await?;
    let mut values: Vec<&str> = rows.iter().filter_map(|r| r.value.as_deref()).collect();
    values.sort_unstable();
    let mut want: Vec<String> = (0..BURST)
        .filter_map(|i| match i % 4 {
            0 => Some(format!("m{i}")),
            1 => None,
            _ => Some(format!("d{i}")),
        })
        .collect();
    want.sort_unstable();
    assert_eq!(values, want, "each stored callback once, and nothing else");
    assert!(
        rows.iter().all(|r| r
            .idem_key
            .as_deref()
            .is_none_or(|k| !k.starts_with("nope-"))),
        "no report under an unknown key"
    );
    drop(held);
    std::sync::Arc::try_unwrap(s)
        .map_err(|_| "server still shared")?
        .stop()
        .await
}
