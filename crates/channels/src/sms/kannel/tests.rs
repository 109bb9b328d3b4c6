//! The Kannel transport against an in-test HTTP server that answers like smsbox 1.4.5.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::StatusCode as AxumStatus;
use axum::routing::get;

use super::*;

const PASSWORD: &str = "s3cret-pw";

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One request as the fake smsbox saw it.
#[derive(Debug, Clone)]
struct Seen {
    raw_query: String,
    params: Vec<(String, String)>,
    peer: SocketAddr,
}

impl Seen {
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct FakeState {
    seen: Mutex<Vec<Seen>>,
    /// When each request arrived.
    arrivals: Mutex<Vec<std::time::Instant>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Decrements the in-flight count even when the client gives up and hyper drops the handler.
struct InFlight<'a>(&'a FakeState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a FakeState) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct FakeKannel {
    url: String,
    state: Arc<FakeState>,
}

impl FakeKannel {
    async fn start() -> Self {
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route("/cgi-bin/sendsms", get(sendsms))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        FakeKannel {
            url: format!("http://{addr}/cgi-bin/sendsms"),
            state,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn config(&self) -> KannelConfig {
        test_config(&self.url)
    }

    fn channel(&self, cfg: &KannelConfig) -> KannelSms {
        init();
        KannelSms::with_password(cfg, PASSWORD).unwrap()
    }
}

/// Plays smsbox: credentials first, then the receiver, then a scripted answer chosen by the
/// message text (`delay=<ms>` anywhere in the text postpones the answer).
async fn sendsms(
    State(state): State<Arc<FakeState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(raw): RawQuery,
) -> (AxumStatus, String) {
    let _guard = InFlight::enter(&state);
    state
        .arrivals
        .lock()
        .unwrap()
        .push(std::time::Instant::now());
    let raw_query = raw.unwrap_or_default();
    let params: Vec<(String, String)> = url::form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    let seen = Seen {
        raw_query,
        params,
        peer,
    };
    state.seen.lock().unwrap().push(seen.clone());

    let text = seen.get("text").unwrap_or_default().to_owned();
    if let Some(ms) = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("delay="))
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    if seen.get("username") != Some("campaignd") || seen.get("password") != Some(PASSWORD) {
        return (
            AxumStatus::FORBIDDEN,
            "Authorization failed for sendsms".into(),
        );
    }
    if seen.get("to").is_none() {
        return (
            AxumStatus::BAD_REQUEST,
            "Missing receiver number, rejected".into(),
        );
    }
    let reply = |status: u16, body: &str| (AxumStatus::from_u16(status).unwrap(), body.to_owned());
    if text.contains("QUEUE") {
        reply(202, "3: Queued for later delivery")
    } else if text.contains("UNROUTABLE") {
        reply(403, "Not routable. Do not try again.")
    } else if text.contains("BADREQ") {
        reply(400, "Unknown request parameter, rejected")
    } else if text.contains("BUSY") {
        reply(503, "Sendsms temporarily unavailable")
    } else {
        reply(202, "0: Accepted for delivery")
    }
}

fn test_config(sendsms_url: &str) -> KannelConfig {
    KannelConfig {
        sendsms_url: sendsms_url.to_owned(),
        username: "campaignd".into(),
        password_env: "UNUSED_IN_TESTS".into(),
        from: "10086".into(),
        dlr_url: "http://127.0.0.1:8080/callbacks/kannel/dlr".into(),
        dlr_mask: 27,
        concurrency: 8,
        timeout_ms: 5_000,
        smsc: None,
        ack_grace_ms: 60_000,
        max_per_second: None,
    }
}

fn msg(n: i64, text: &str) -> Outbound {
    Outbound {
        contact_id: n,
        key: format!("run1-w1-{n}"),
        subscriber_id: 1000 + n,
        msisdn: format!("1380013{n:04}"),
        text: text.to_owned(),
        campaign: "spring".into(),
        wave: "w1".into(),
        team: None,
        due_at: None,
        escalate_to: None,
        outcomes: Vec::new(),
        subject: None,
        address: None,
    }
}

const ACCEPTED: Result<Accepted, SendError> = Ok(Accepted {
    gateway_ref: None,
    queued: false,
});

/// What smsbox's `urltrans_fill_escape_codes` (1.4.5) does to a dlr-url before calling it:
/// `%%` becomes `%`, every escape letter it knows is replaced, anything else is kept.
fn kannel_fill_escapes(pattern: &str, values: &[(char, &str)]) -> String {
    const KNOWN: &str = "aAbBcCdDfFiIkmMnoOPpqQrsStTu";
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => out.push('%'),
            Some('%') => out.push('%'),
            Some(esc) => match values.iter().find(|(k, _)| *k == esc) {
                Some((_, v)) => out.push_str(v),
                None if KNOWN.contains(esc) => out.push_str("SUBSTITUTED"),
                None => {
                    out.push('%');
                    out.push(esc);
                }
            },
        }
    }
    out
}

#[tokio::test]
async fn sends_exactly_the_sendsms_parameters() {
    let kannel = FakeKannel::start().await;
    let mut cfg = kannel.config();
    cfg.smsc = Some("FAKE".into());
    let sms = kannel.channel(&cfg);
    assert_eq!(sms.kind(), "sms");

    let res = sms
        .send_batch(&[msg(42, "Hello campaign, 50% off! Reply STOP {now}")])
        .await;
    assert_eq!(res, vec![ACCEPTED]);

    let seen = kannel.seen();
    assert_eq!(seen.len(), 1);
    let expected: Vec<(String, String)> = [
        ("username", "campaignd"),
        ("password", PASSWORD),
        ("from", "10086"),
        ("to", "13800130042"),
        ("text", "Hello campaign, 50% off! Reply STOP {now}"),
        ("smsc", "FAKE"),
        ("dlr-mask", "27"),
        (
            "dlr-url",
            "http://127.0.0.1:8080/callbacks/kannel/dlr?key=run1-w1-42\
             &type=%d&smscid=%i&fid=%F&to=%p&ts=%T&reply=%A",
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(seen[0].params, expected);
    // Kannel URL-decodes the dlr-url parameter once, so its escapes must arrive as %25.
    assert!(
        seen[0]
            .raw_query
            .contains("%26type%3D%25d%26smscid%3D%25i%26fid%3D%25F"),
        "{}",
        seen[0].raw_query
    );
    assert!(
        seen[0]
            .raw_query
            .contains("text=Hello+campaign%2C+50%25+off"),
        "{}",
        seen[0].raw_query
    );
}

#[tokio::test]
async fn chinese_text_switches_to_ucs2_and_gsm_text_does_not() {
    let kannel = FakeKannel::start().await;
    let sms = kannel.channel(&kannel.config());

    let chinese = "您好，春季优惠：回复TD退订";
    let gsm_extended = "Prix: 5€ [été] ~ {ok} ^|\\ £ ¿Ñ?\nbye";
    let res = sms
        .send_batch(&[
            msg(1, chinese),
            msg(2, gsm_extended),
            msg(3, "curly ’ quote"),
        ])
        .await;
    assert_eq!(res, vec![ACCEPTED; 3]);

    let seen = kannel.seen();
    let by_to = |to: &str| {
        seen.iter()
            .find(|s| s.get("to") == Some(to))
            .unwrap()
            .clone()
    };
    let ucs2 = by_to("13800130001");
    assert_eq!(ucs2.get("text"), Some(chinese));
    assert_eq!(ucs2.get("charset"), Some("UTF-8"));
    assert_eq!(ucs2.get("coding"), Some("2"));

    let gsm = by_to("13800130002");
    assert_eq!(gsm.get("text"), Some(gsm_extended));
    assert_eq!(gsm.get("charset"), None);
    assert_eq!(gsm.get("coding"), None);

    // A typographic apostrophe is not in GSM 03.38: Kannel would drop or mangle it.
    assert_eq!(by_to("13800130003").get("coding"), Some("2"));
}

#[test]
fn gsm7_detection_follows_gsm_03_38() {
    assert!(is_gsm7("Hello @ 10:30, $5 & more_stuff #1!"));
    assert!(is_gsm7("ΔΦΓΛΩΠΨΣΘΞ ÆæßÉ ÄÖÑÜ§ äöñüà èéùìòÇ Øø Åå ¡¿ ¤ £¥"));
    assert!(is_gsm7("€ [ ] { } ~ ^ | \\ \u{0C}"));
    assert!(is_gsm7(""));
    assert!(!is_gsm7("`backtick`"));
    assert!(!is_gsm7("您好"));
    assert!(!is_gsm7("emoji 🙂"));
    assert!(!is_gsm7("ç lowercase cedilla"));
    assert!(!is_gsm7("tab\there"));
}

#[tokio::test]
async fn dlr_url_carries_the_key_through_kannel_escapes() {
    let kannel = FakeKannel::start().await;
    let sms = kannel.channel(&kannel.config());

    let keys = [
        "run1-w1-7",
        "run 7/wave#2&x=1%25+y",
        "活动-波次-¥100",
        "%A%B%C%D%F%p%%",
        "Ωmega:é:ÿ",
    ];
    let batch: Vec<Outbound> = keys
        .iter()
        .enumerate()
        .map(|(n, key)| Outbound {
            key: (*key).to_owned(),
            ..msg(n as i64, "hi")
        })
        .collect();
    assert_eq!(sms.send_batch(&batch).await, vec![ACCEPTED; keys.len()]);

    let seen = kannel.seen();
    for (n, key) in keys.iter().enumerate() {
        let to = format!("1380013{n:04}");
        let req = seen.iter().find(|s| s.get("to") == Some(&to)).unwrap();
        let pattern = req.get("dlr-url").unwrap();
        let callback = kannel_fill_escapes(
            pattern,
            &[
                ('d', "1"),
                ('i', "FAKE"),
                ('F', "c08d4205"),
                ('p', "13800138000"),
                ('T', "1795393517"),
                ('A', "ACK%2F"),
            ],
        );
        let callback = Url::parse(&callback).unwrap();
        assert_eq!(callback.path(), "/callbacks/kannel/dlr");
        let params: Vec<(String, String)> = callback.query_pairs().into_owned().collect();
        let expected: Vec<(String, String)> = [
            ("key", *key),
            ("type", "1"),
            ("smscid", "FAKE"),
            ("fid", "c08d4205"),
            ("to", "13800138000"),
            ("ts", "1795393517"),
            ("reply", "ACK/"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(params, expected, "callback URL {callback}");
    }
}

#[tokio::test]
async fn dlr_url_appends_to_an_existing_query_and_mask_zero_disables_reports() {
    let kannel = FakeKannel::start().await;
    let mut cfg = kannel.config();
    cfg.dlr_url = "http://127.0.0.1:8080/dlr?tenant=a".into();
    let sms = kannel.channel(&cfg);
    sms.send_batch(&[msg(1, "hi")]).await;
    let dlr_url = kannel.seen()[0].get("dlr-url").unwrap().to_owned();
    assert!(
        dlr_url.starts_with("http://127.0.0.1:8080/dlr?tenant=a&key=run1-w1-1&type=%d"),
        "{dlr_url}"
    );

    let kannel = FakeKannel::start().await;
    let mut cfg = kannel.config();
    cfg.dlr_mask = 0;
    let sms = kannel.channel(&cfg);
    sms.send_batch(&[msg(1, "hi")]).await;
    let seen = kannel.seen();
    assert_eq!(seen[0].get("dlr-mask"), None);
    assert_eq!(seen[0].get("dlr-url"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maps_each_answer_and_keeps_batch_order() {
    let kannel = FakeKannel::start().await;
    let sms = kannel.channel(&kannel.config());

    // The first messages answer last, so completion order is the reverse of batch order.
    let batch = [
        msg(0, "plain delay=300"),
        msg(1, "QUEUE delay=250"),
        msg(2, "UNROUTABLE delay=200"),
        msg(3, "BADREQ delay=150"),
        msg(4, "BUSY delay=100"),
        msg(5, "plain delay=0"),
    ];
    let res = sms.send_batch(&batch).await;
    assert_eq!(res.len(), 6);
    assert_eq!(res[0], ACCEPTED);
    assert_eq!(
        res[1],
        Ok(Accepted {
            gateway_ref: None,
            queued: true
        })
    );
    assert_eq!(
        res[2],
        Err(SendError::Permanent(
            "Kannel answered HTTP 403: Not routable. Do not try again.".into()
        ))
    );
    assert_eq!(
        res[3],
        Err(SendError::Permanent(
            "Kannel answered HTTP 400: Unknown request parameter, rejected".into()
        ))
    );
    assert_eq!(
        res[4],
        Err(SendError::Transient(
            "Kannel answered HTTP 503: Sendsms temporarily unavailable".into()
        ))
    );
    assert_eq!(res[5], ACCEPTED);
}

#[tokio::test]
async fn wrong_credentials_refuse_the_account_and_are_unhealthy() {
    let kannel = FakeKannel::start().await;
    init();
    let sms = KannelSms::with_password(&kannel.config(), "wrong").unwrap();
    let res = sms.send_batch(&[msg(1, "hi")]).await;
    // The account, not the message: the dispatcher pauses the channel instead of failing it.
    assert_eq!(
        res,
        vec![Err(SendError::Refused(
            "Kannel answered HTTP 403: Authorization failed for sendsms".into()
        ))]
    );
    assert!(!res[0].as_ref().unwrap_err().is_transient());
    let err = sms.healthcheck().await.unwrap_err();
    assert!(matches!(err, SendError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("Authorization failed"), "{err}");
}

#[test]
fn classify_covers_statuses_kannel_does_not_script() {
    assert_eq!(classify(StatusCode::OK, "Sent.", None), ACCEPTED);
    assert!(matches!(
        classify(StatusCode::TOO_MANY_REQUESTS, "", None),
        Err(SendError::Throttled {
            retry_after: None,
            ..
        })
    ));
    assert_eq!(
        classify(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            Some(Duration::from_secs(7))
        ),
        Err(SendError::Throttled {
            reason: "Kannel answered HTTP 503: busy".into(),
            retry_after: Some(Duration::from_secs(7)),
        })
    );
    // 503 without a time to come back is an ordinary transient failure (the breaker counts it).
    assert!(matches!(
        classify(StatusCode::SERVICE_UNAVAILABLE, "busy", None),
        Err(SendError::Transient(_))
    ));
    let now = chrono::DateTime::parse_from_rfc3339("2026-10-21T07:28:00Z")
        .unwrap()
        .to_utc();
    assert_eq!(retry_after(" 12 ", now), Some(Duration::from_secs(12)));
    // The HTTP-date form: the time left until then; none when it has passed.
    assert_eq!(
        retry_after("Wed, 21 Oct 2026 07:29:30 GMT", now),
        Some(Duration::from_secs(90))
    );
    assert_eq!(
        retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    // A year, in either form, is capped: the campaign is not stopped for it.
    assert_eq!(retry_after("31536000", now), Some(MAX_RETRY_AFTER));
    assert_eq!(
        retry_after("Thu, 21 Oct 2027 07:28:00 GMT", now),
        Some(MAX_RETRY_AFTER)
    );
    assert_eq!(retry_after("soon", now), None);
    assert_eq!(retry_after("-5", now), None);
    assert!(matches!(
        classify(StatusCode::REQUEST_TIMEOUT, "", None),
        Err(SendError::Transient(_))
    ));
    assert!(matches!(
        classify(StatusCode::NOT_FOUND, "Not found", None),
        Err(SendError::Refused(_))
    ));
    assert!(matches!(
        classify(StatusCode::UNAUTHORIZED, "", None),
        Err(SendError::Refused(_))
    ));
    // 403 without Kannel's authorization text is about the message (not routable).
    assert!(matches!(
        classify(
            StatusCode::FORBIDDEN,
            "Not routable. Do not try again.",
            None
        ),
        Err(SendError::Permanent(_))
    ));
    let long = "x".repeat(5000);
    let Err(SendError::Transient(reason)) = classify(StatusCode::BAD_GATEWAY, &long, None) else {
        panic!("502 must be transient");
    };
    assert!(reason.chars().count() < 300, "{}", reason.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uses_and_caps_parallel_keep_alive_connections() {
    let kannel = FakeKannel::start().await;
    let mut cfg = kannel.config();
    cfg.concurrency = 8;
    let sms = kannel.channel(&cfg);

    let batch: Vec<Outbound> = (0..48).map(|n| msg(n, "hi delay=40")).collect();
    let started = tokio::time::Instant::now();
    let res = sms.send_batch(&batch).await;
    let elapsed = started.elapsed();
    assert_eq!(res, vec![ACCEPTED; 48]);
    assert_eq!(kannel.state.max_in_flight.load(Ordering::SeqCst), 8);
    // 48 × 40 ms one at a time would take 1.9 s; 8 at a time about 0.24 s.
    assert!(elapsed < Duration::from_millis(1200), "{elapsed:?}");
    let connections: HashSet<SocketAddr> = kannel.seen().iter().map(|s| s.peer).collect();
    assert!(
        connections.len() <= 8,
        "{} connections for 48 requests: keep-alive is not reused",
        connections.len()
    );

    // Two batches at once share the limit instead of doubling it.
    let kannel = FakeKannel::start().await;
    let mut cfg = kannel.config();
    cfg.concurrency = 4;
    let sms = kannel.channel(&cfg);
    let first: Vec<Outbound> = (0..12).map(|n| msg(n, "hi delay=30")).collect();
    let second: Vec<Outbound> = (12..24).map(|n| msg(n, "hi delay=30")).collect();
    let (a, b) = tokio::join!(sms.send_batch(&first), sms.send_batch(&second));
    assert!(a.iter().chain(&b).all(Result::is_ok));
    assert_eq!(kannel.state.max_in_flight.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn timeouts_are_ambiguous_and_do_not_hold_up_the_rest() {
    let kannel = FakeKannel::start().await;
    let mut cfg = kannel.config();
    cfg.timeout_ms = 200;
    let sms = kannel.channel(&cfg);

    let res = sms
        .send_batch(&[msg(1, "slow delay=3000"), msg(2, "fast")])
        .await;
    assert_eq!(
        res[0],
        Err(SendError::Ambiguous(
            "Kannel sendsms did not answer within 200 ms".into()
        ))
    );
    assert_eq!(res[1], ACCEPTED);
}

#[tokio::test]
async fn connection_refused_is_transient_and_hides_the_password() {
    // Bind then drop to get a port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    init();
    let cfg = test_config(&format!("http://127.0.0.1:{port}/cgi-bin/sendsms"));
    let sms = KannelSms::with_password(&cfg, PASSWORD).unwrap();

    let res = sms.send_batch(&[msg(1, "hi")]).await;
    let Err(SendError::Transient(reason)) = &res[0] else {
        panic!("expected a transient failure, got {res:?}");
    };
    assert!(reason.starts_with("cannot connect to Kannel"), "{reason}");
    assert!(!reason.contains(PASSWORD), "{reason}");

    let err = sms.healthcheck().await.unwrap_err();
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    assert!(!err.to_string().contains(PASSWORD), "{err}");
    assert!(!format!("{sms:?}").contains(PASSWORD));
}

#[tokio::test]
async fn healthcheck_accepts_missing_receiver_and_sends_nothing() {
    let kannel = FakeKannel::start().await;
    let sms = kannel.channel(&kannel.config());
    sms.healthcheck().await.unwrap();
    let seen = kannel.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].get("to"), None);
    assert_eq!(seen[0].get("text"), None);
}

#[tokio::test]
async fn healthcheck_rejects_something_that_is_not_sendsms() {
    let kannel = FakeKannel::start().await;
    let mut cfg = kannel.config();
    cfg.sendsms_url = kannel.url.replace("/cgi-bin/sendsms", "/wrong");
    let sms = kannel.channel(&cfg);
    let err = sms.healthcheck().await.unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");
}

/// `max_per_second` (sms/rate.rs, waited for in `send_each`): counted at the loopback
/// server, no second holds more requests than the limit, even with a pool far wider.
#[tokio::test]
async fn max_per_second_is_never_exceeded_at_the_gateway() {
    let kannel = FakeKannel::start().await;
    let cfg = KannelConfig {
        concurrency: 16,
        max_per_second: Some(20),
        ..kannel.config()
    };
    let sms = kannel.channel(&cfg);
    let batch: Vec<Outbound> = (0..50).map(|i| msg(i, "hi")).collect();
    let started = std::time::Instant::now();
    let res = sms.send_batch(&batch).await;
    assert!(res.iter().all(Result::is_ok), "{res:?}");
    // 50 messages 50 ms apart: the last starts 2.45 s after the first.
    assert!(
        started.elapsed() >= Duration::from_millis(2400),
        "{:?}",
        started.elapsed()
    );
    let mut at = kannel.state.arrivals.lock().unwrap().clone();
    at.sort();
    assert_eq!(at.len(), 50);
    for (i, t) in at.iter().enumerate() {
        let in_window = at[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        // One more than the limit tolerates a request delayed on loopback arriving with
        // the next; a missing limit puts all 50 in the first few milliseconds.
        assert!(
            in_window <= 21,
            "{in_window} requests in the second from {i}"
        );
    }
}

#[test]
fn config_errors_name_the_key() {
    init();
    let base = test_config("http://127.0.0.1:13013/cgi-bin/sendsms");
    KannelSms::with_password(&base, PASSWORD).unwrap();

    let cases: Vec<(&str, KannelConfig)> = vec![
        (
            "sendsms_url",
            KannelConfig {
                sendsms_url: "127.0.0.1:13013".into(),
                ..base.clone()
            },
        ),
        (
            "sendsms_url",
            KannelConfig {
                sendsms_url: "ftp://127.0.0.1/".into(),
                ..base.clone()
            },
        ),
        (
            "dlr_url",
            KannelConfig {
                dlr_url: "/callbacks/kannel/dlr".into(),
                ..base.clone()
            },
        ),
        (
            "dlr_url",
            KannelConfig {
                dlr_url: "http://127.0.0.1:8080/dlr#x".into(),
                ..base.clone()
            },
        ),
        (
            "dlr_mask",
            KannelConfig {
                dlr_mask: 32,
                ..base.clone()
            },
        ),
        (
            "concurrency",
            KannelConfig {
                concurrency: 0,
                ..base.clone()
            },
        ),
        (
            "timeout_ms",
            KannelConfig {
                timeout_ms: 0,
                ..base.clone()
            },
        ),
        (
            "username",
            KannelConfig {
                username: String::new(),
                ..base.clone()
            },
        ),
        (
            "from",
            KannelConfig {
                from: String::new(),
                ..base.clone()
            },
        ),
    ];
    for (key, cfg) in cases {
        let err = KannelSms::with_password(&cfg, PASSWORD).unwrap_err();
        assert!(
            matches!(&err, BuildError::Invalid { key: k, .. } if *k == key),
            "{key}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("sms.{key}")), "{err}");
    }
}
