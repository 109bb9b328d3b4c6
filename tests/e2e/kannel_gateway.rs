//! campaignd's Kannel channel against the real gateway (bearerbox, smsbox, fakesmsc as the
//! SMSC): the claims that only the real Kannel can confirm. How each real answer is
//! classified for retry, that Chinese text crosses Kannel intact in both directions, and
//! that the channel's keep-alive pool really keeps the number of connections to smsbox at
//! its concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use channels::sms::{KannelConfig, KannelSms};
use channels::{Accepted, Channel, Outbound, SendError};
use tokio_util::sync::CancellationToken;

use crate::helpers;
use crate::services::{Kannel, SECRET_ENV, alive, signal, wait_for};

/// Generous: a loaded two-core machine may be slow, and nothing here waits on a timeout
/// except the one scenario that is about a timeout.
const DEADLINE: Duration = Duration::from_secs(60);

/// campaignd's API (the DLR/MO callbacks Kannel calls) on a fresh database, plus a Kannel.
struct Gateway {
    db: helpers::TestDb,
    api_base: String,
    kannel: Kannel,
    _api: tokio_util::sync::DropGuard,
}

async fn gateway() -> Gateway {
    let db = helpers::fresh_db(helpers::env_backend()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_base = format!("http://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(api::serve_with(
        listener,
        api::AppState {
            store: db.store.clone(),
        },
        helpers::serve_options(Arc::new(store::wall_now)),
        async move { stop.cancelled().await },
    ));
    let kannel = Kannel::start(&api_base, &helpers::gateway_token(&db.store).await);
    Gateway {
        db,
        api_base,
        kannel,
        _api: cancel.drop_guard(),
    }
}

/// The transport as the daemon builds it: password from `SECRET_ENV`, dlr-urls signed with
/// the tests' callback secret.
fn signed(cfg: &KannelConfig) -> Result<KannelSms, channels::sms::BuildError> {
    Ok(
        KannelSms::with_password(cfg, crate::services::env_secret(SECRET_ENV))?
            .with_dlr_secret(helpers::callback_secret()),
    )
}

/// The channel as the daemon configures it, sending to `sendsms_url`.
fn config(g: &Gateway, sendsms_url: String, concurrency: usize, timeout_ms: u64) -> KannelConfig {
    KannelConfig {
        sendsms_url,
        username: "campaignd".into(),
        password_env: SECRET_ENV.into(),
        from: "10086".into(),
        dlr_url: format!("{}/callbacks/kannel/dlr", g.api_base),
        dlr_mask: 27,
        concurrency,
        timeout_ms,
        smsc: None,
        ack_grace_ms: 60_000,
        max_per_second: None,
    }
}

fn msg(n: i64, msisdn: &str, text: &str) -> Outbound {
    Outbound {
        contact_id: n,
        key: format!("r1-sms_offer-s{n}"),
        subscriber_id: n,
        msisdn: msisdn.to_owned(),
        text: text.to_owned(),
        campaign: "kannel-gateway-test".into(),
        wave: "sms_offer".into(),
        team: None,
        due_at: None,
        escalate_to: None,
        outcomes: Vec::new(),
        subject: None,
        address: None,
    }
}

async fn send(ch: &KannelSms, m: Outbound) -> Result<Accepted, SendError> {
    ch.send_batch(&[m]).await.remove(0)
}

async fn wait_delivered(kannel: &Kannel, line: &str) {
    wait_for(&format!("fakesmsc to receive `{line}`"), DEADLINE, || {
        kannel.delivered().iter().any(|l| l == line).then_some(())
    })
    .await;
}

async fn wait_smsc_state(kannel: &Kannel, want: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let state = kannel.fake_smsc_state().await;
        if want.contains(&state.as_str()) {
            return state;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "FAKE SMSC state is `{state}`, expected one of {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn permanent(res: Result<Accepted, SendError>, http: &str, body: &str) {
    let err = res.expect_err("Kannel refused the message");
    assert!(!err.is_transient(), "must not be retried: {err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("HTTP {http}")) && text.contains(body),
        "expected Kannel's HTTP {http} `{body}`, got {text}"
    );
}

fn transient(res: Result<Accepted, SendError>, reason: &str) {
    let err = res.expect_err("the send failed");
    assert!(err.is_transient(), "must be retried: {err:?}");
    assert!(err.to_string().contains(reason), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kannel_answers_are_classified_for_retry() {
    let g = gateway().await;
    let k = &g.kannel;
    let ch = signed(&config(&g, k.sendsms_url(), 4, 30_000)).unwrap();

    // Accepted and delivered to the SMSC.
    let res = send(&ch, msg(1, "13800138000", "classification probe")).await;
    assert_eq!(
        res,
        Ok(Accepted {
            gateway_ref: None,
            queued: false
        })
    );
    wait_delivered(k, "10086 13800138000 text classification probe").await;
    ch.healthcheck().await.expect("smsbox is healthy");

    // Wrong password: smsbox answers 403 "Authorization failed for sendsms". Retrying cannot help.
    let cfg = config(&g, k.sendsms_url(), 4, 30_000);
    let wrong = KannelSms::with_password(&cfg, "not-the-password").unwrap();
    permanent(
        send(&wrong, msg(2, "13800138000", "wrong password")).await,
        "403",
        "Authorization failed for sendsms",
    );
    let health = wrong.healthcheck().await.expect_err("bad credentials");
    assert!(!health.is_transient(), "{health:?}");

    // Bad receivers: 400, the same request gets the same answer.
    permanent(
        send(&ch, msg(3, "", "no receiver")).await,
        "400",
        "Empty receiver number not allowed",
    );
    permanent(
        send(&ch, msg(4, "not-a-number", "junk receiver")).await,
        "400",
        "denied by white- and/or black-lists",
    );

    // SMSC stopped by the operator: 403 "Not routable. Do not try again."
    let (code, body) = k.admin("stop-smsc?smsc=FAKE").await;
    assert_eq!(code, 200, "stop-smsc: {body}");
    wait_smsc_state(k, &["dead"]).await;
    permanent(
        send(&ch, msg(5, "13800138000", "smsc stopped")).await,
        "403",
        "Not routable",
    );

    // SMSC link down (fakesmsc exited with the stop): Kannel queues, the message is taken.
    let (code, body) = k.admin("start-smsc?smsc=FAKE").await;
    assert_eq!(code, 200, "start-smsc: {body}");
    let state = wait_smsc_state(k, &["re-connecting", "connecting"]).await;
    assert_eq!(
        send(&ch, msg(6, "13800138006", "queued while the smsc is down")).await,
        Ok(Accepted {
            gateway_ref: None,
            queued: true
        }),
        "FAKE is {state}"
    );
    // The queued message survives a restart (file store) and goes out once fakesmsc is back.
    k.run(&["restart"]);
    wait_delivered(k, "10086 13800138006 text queued while the smsc is down").await;

    // bearerbox frozen: smsbox takes the request and never answers. A timeout is transient,
    // and ambiguous: once bearerbox runs again, Kannel delivers the message anyway.
    let bearerbox = k.pid("bearerbox");
    let quick = signed(&config(&g, k.sendsms_url(), 4, 2_000)).unwrap();
    signal(bearerbox, "STOP");
    let res = send(
        &quick,
        msg(7, "13800138007", "sent while bearerbox was frozen"),
    )
    .await;
    signal(bearerbox, "CONT");
    assert!(
        matches!(res, Err(SendError::Ambiguous(_))),
        "a timeout is ambiguous: {res:?}"
    );
    transient(res, "did not answer within 2000 ms");
    wait_delivered(k, "10086 13800138007 text sent while bearerbox was frozen").await;

    // bearerbox gone while smsbox runs: smsbox closes its sendsms port until bearerbox is
    // back, so the channel cannot connect: transient.
    let smsbox = k.pid("smsbox");
    signal(bearerbox, "KILL");
    let port = k.sendsms_port;
    wait_for("smsbox to close its sendsms port", DEADLINE, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    })
    .await;
    assert!(alive(smsbox), "smsbox still runs, waiting for bearerbox");
    transient(
        send(&ch, msg(8, "13800138000", "bearerbox gone")).await,
        "cannot connect to Kannel sendsms",
    );
    let health = ch.healthcheck().await.expect_err("smsbox unreachable");
    assert!(health.is_transient(), "{health:?}");

    // Everything stopped: connection refused, transient.
    k.run(&["stop"]);
    transient(
        send(&ch, msg(9, "13800138000", "kannel stopped")).await,
        "cannot connect to Kannel sendsms",
    );
}

/// fakesmsc shows UCS-2 as URL-encoded UTF-16BE (bytes outside `%xx` are literal).
fn decode_ucs2(data: &str) -> String {
    let raw = data.as_bytes();
    let mut bytes = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            let hex = std::str::from_utf8(&raw[i + 1..i + 3]).unwrap();
            bytes.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    assert!(bytes.len() % 2 == 0, "UTF-16 has an even length: {data}");
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).unwrap_or_else(|e| panic!("{data}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chinese_text_crosses_real_kannel_intact_both_ways() {
    let g = gateway().await;
    let k = &g.kannel;
    let ch = signed(&config(&g, k.sendsms_url(), 4, 30_000)).unwrap();

    // MT: the channel asks for UCS-2, so the SMSC receives the characters, not `?`s.
    let text = "你好，欢迎入学！回复1办理";
    send(&ch, msg(1, "13800138000", text)).await.unwrap();
    let prefix = "10086 13800138000 ";
    let line = wait_for("the Chinese MT at fakesmsc", DEADLINE, || {
        k.delivered().into_iter().find(|l| l.starts_with(prefix))
    })
    .await;
    let data = line[prefix.len()..]
        .strip_prefix("ucs-2 ")
        .unwrap_or_else(|| panic!("sent as UCS-2: {line}"));
    assert_eq!(decode_ucs2(data), text, "fakesmsc line: {line}");

    // MO: a reply typed in Chinese reaches campaignd's MO callback as the same UTF-8 text.
    k.mo("13800138001", "10086", "退订");
    let start = Instant::now();
    let row = loop {
        let rows = g.db.store.unprocessed_inbound(100).await.unwrap();
        if let Some(row) = rows.into_iter().find(|r| r.source == "mo") {
            break row;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the MO never reached campaignd; smsbox access log:\n{}",
            k.log("smsbox-access.log")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(row.value.as_deref(), Some("退订"), "{row:?}");
    assert_eq!(row.msisdn.as_deref(), Some("13800138001"), "{row:?}");
    assert_eq!(row.kind, "reply");
}

/// A TCP proxy in front of smsbox that counts the connections it accepts.
async fn counting_proxy(target_port: u16) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) =
                    tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (format!("http://{addr}/cgi-bin/sendsms"), accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_holds_connections_to_the_concurrency() {
    const CONCURRENCY: usize = 4;
    const BATCHES: i64 = 3;
    const PER_BATCH: i64 = 60;
    let g = gateway().await;
    let k = &g.kannel;
    let (url, accepted) = counting_proxy(k.sendsms_port).await;
    let ch = signed(&config(&g, url, CONCURRENCY, 30_000)).unwrap();

    for b in 0..BATCHES {
        let batch: Vec<Outbound> = (0..PER_BATCH)
            .map(|i| {
                let n = b * PER_BATCH + i;
                msg(n, &format!("1390000{n:04}"), &format!("keepalive {n}"))
            })
            .collect();
        for (i, res) in ch.send_batch(&batch).await.into_iter().enumerate() {
            assert!(res.is_ok(), "batch {b} message {i}: {res:?}");
        }
    }
    let total = usize::try_from(BATCHES * PER_BATCH).unwrap();
    wait_for("every message at fakesmsc", DEADLINE, || {
        let got = k
            .delivered()
            .iter()
            .filter(|l| l.contains(" text keepalive "))
            .count();
        (got == total).then_some(())
    })
    .await;

    // Not exactly CONCURRENCY: when a request finds no idle connection because the previous
    // one is still on its way back to the pool, hyper starts a connection and keeps it even
    // if the idle one wins the race. Without reuse it would be one connection per request.
    let connections = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=2 * CONCURRENCY).contains(&connections),
        "{total} requests at concurrency {CONCURRENCY} used {connections} connections to smsbox"
    );
}
