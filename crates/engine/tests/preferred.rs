//! `channel: preferred`: each subscriber is contacted on their first-choice channel inside
//! its usual slot, and on their second choice (inside its slot) when the first did not
//! reach them, once; the report counts reach per channel and choice. On a manual clock,
//! step by step. Runs on SQLite, or PostgreSQL with CAMPAIGND_TEST_BACKEND=postgres.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use channels::{Accepted, Channel, Outbound, SendError};
use chrono::{TimeZone, Timelike};
use domain::Choice;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use store::inbound::{NewInbound, source};
use store::subscribers::OnDuplicate;
use store::{Millis, Store};

const MINUTE: i64 = 60_000;

const PREFERRED: &str = r#"
campaign: pref
timezone: Asia/Shanghai
audience:
  where: "student_stage == 'freshman'"
waves:
  - id: offer
    channel: preferred
    templates: { sms: offer.txt, email: offer_mail.txt }
    respond_within: 2d
    send_within: 1d
    responses:
      - reply: "*"
      - event: { type: order, value: bundle }
"#;

/// Accepts every message on `kind` and keeps (subscriber, key, clock time) of each; an
/// e-mail without an address is refused, as the SMTP channel refuses it.
struct Keep {
    kind: &'static str,
    clock: ManualClock,
    sent: Mutex<Vec<(i64, String, Millis)>>,
    /// The subject of each message sent (a mail's, from its template).
    subjects: Mutex<Vec<Option<String>>>,
    /// (subscriber, subject, text) of each message sent.
    texts: Mutex<Vec<(i64, Option<String>, String)>>,
}

#[async_trait]
impl Channel for Keep {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn send_batch(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        let mut sent = self.sent.lock().unwrap();
        batch
            .iter()
            .map(|m| {
                if self.kind == "email" && m.address.is_none() {
                    return Err(SendError::Permanent("no address".into()));
                }
                sent.push((m.subscriber_id, m.key.clone(), self.clock.now()));
                self.subjects.lock().unwrap().push(m.subject.clone());
                self.texts.lock().unwrap().push((
                    m.subscriber_id,
                    m.subject.clone(),
                    m.text.clone(),
                ));
                Ok(Accepted {
                    gateway_ref: None,
                    queued: false,
                })
            })
            .collect()
    }
}

fn shanghai(d: u32, h: u32, m: u32) -> Millis {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 3, d, h, m, 0)
        .unwrap()
        .timestamp_millis()
}

fn local_hour(t: Millis) -> u32 {
    chrono::DateTime::from_timestamp_millis(t)
        .unwrap()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .hour()
}

fn dlr(key: &str, kind: &str, at: Millis) -> NewInbound {
    NewInbound {
        source: source::DLR,
        idem_key: Some(key.to_owned()),
        msisdn: None,
        kind: kind.into(),
        value: None,
        payload: "{}".into(),
        received_at: at,
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    store: Store,
    clock: ManualClock,
    engine: Engine,
    sms: Arc<Keep>,
    email: Arc<Keep>,
    subs: Vec<i64>,
}

impl Rig {
    async fn step(&self, t: Millis) {
        self.clock.set(t);
        self.engine.tick().await.unwrap();
        self.engine.dispatch_round("sms").await.unwrap();
        self.engine.dispatch_round("email").await.unwrap();
        self.engine.dispatch_round("service").await.unwrap();
        self.engine.dispatch_round("outbound_call").await.unwrap();
        self.engine.tick().await.unwrap();
    }

    async fn key(&self, run: i64, i: usize, choice: Choice) -> Option<String> {
        self.store
            .choice_contact_key(run, "offer", self.subs[i], choice)
            .await
            .unwrap()
    }
}

/// Subscribers: 0, 1, 2 prefer SMS 09:00-12:00 then e-mail 18:00-21:00 (with an
/// address); 3 prefers e-mail (no address) then SMS 18:00-21:00; 4 prefers the
/// service desk then a call, neither of which the wave has a message for.
async fn rig(workflow: &str) -> Rig {
    rig_with(workflow, None, |base| {
        let sms_first = |i: usize| {
            base(i)
                .with("first_channel", "sms")
                .with("first_channel_slot", "09:00-12:00")
                .with("second_channel", "email")
                .with("second_channel_slot", "18:00-21:00")
                .with("email", format!("s{i}@example.com"))
        };
        vec![
            sms_first(0),
            sms_first(1),
            sms_first(2),
            base(3)
                .with("first_channel", "email")
                .with("first_channel_slot", "09:00-12:00")
                .with("second_channel", "sms")
                .with("second_channel_slot", "18:00-21:00"),
            base(4)
                .with("first_channel", "service")
                .with("second_channel", "outbound_call"),
        ]
    })
    .await
}

/// A rig whose workflows folder has `attributes` as its catalogue (the shipped one when
/// `None`; the store gets its columns) and the subscribers `people` builds from a plain
/// subscriber of that catalogue (by index).
async fn rig_with(
    workflow: &str,
    attributes: Option<&str>,
    people: impl FnOnce(
        &dyn Fn(usize) -> store::subscribers::NewSubscriber,
    ) -> Vec<store::subscribers::NewSubscriber>,
) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = store::testing::fresh_store(dir.path()).await.unwrap();
    let wf_dir = dir.path().join("workflows");
    std::fs::create_dir_all(&wf_dir).unwrap();
    for (file, text) in [
        ("offer.txt", "Offer for {name}"),
        ("offer_mail.txt", "Subject: An offer\n\nOffer for {name}"),
        ("short.txt", "Short offer for {name}"),
        ("short_mail.txt", "Subject: Short\n\nShort offer for {name}"),
        ("long.txt", "A longer offer for {name}"),
        (
            "long_mail.txt",
            "Subject: Long\n\nA longer offer for {name}",
        ),
        ("visit.txt", "Visit {name}"),
        ("call.txt", "Call {name}"),
        (
            "staff.yaml",
            "staff:\n  - id: desk\n    name: Service desk\n    email: desk@example.com\n",
        ),
        ("pref.yaml", workflow),
    ] {
        std::fs::write(wf_dir.join(file), text).unwrap();
    }
    if let Some(a) = attributes {
        std::fs::write(wf_dir.join("attributes.yaml"), a).unwrap();
    }
    let (wfs, diags) = spec::load_dir(&wf_dir);
    assert!(diags.is_empty(), "{diags:#?}");
    let cat = wfs[0].catalogue.clone();
    store.apply_catalogue(cat.clone()).await.unwrap();
    let base = |i: usize| store::testing::subscriber_in(&format!("1380000{i:04}"), cat.clone());
    let rows = people(&base);
    let t0 = shanghai(1, 9, 0);
    store
        .insert_subscribers(&rows, OnDuplicate::Fail, t0)
        .await
        .unwrap();
    let mut subs = Vec::new();
    for r in &rows {
        subs.push(
            store
                .subscriber_by_msisdn(&r.msisdn)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let clock = ManualClock::new(shanghai(1, 8, 30));
    let keep = |kind| {
        Arc::new(Keep {
            kind,
            clock: clock.clone(),
            sent: Mutex::default(),
            subjects: Mutex::default(),
            texts: Mutex::default(),
        })
    };
    let (sms, email) = (keep("sms"), keep("email"));
    let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    chans.insert("sms".into(), sms.clone());
    chans.insert("email".into(), email.clone());
    // Tasks go on the worklists, as the daemon opens them.
    for kind in ["service", "outbound_call"] {
        chans.insert(
            kind.into(),
            Arc::new(channels::worklist::Worklist::new(store.clone(), kind)),
        );
    }
    let engine = Engine::new(
        store.clone(),
        clock.clock(),
        chans,
        EngineConfig::new("pref", dir.path().join("no-calendars")),
    )
    .unwrap();
    engine.load(wfs).await.unwrap();
    Rig {
        _dir: dir,
        store,
        clock,
        engine,
        sms,
        email,
        subs,
    }
}

// store `write_fallbacks` (with the undelivered report, with the failed send), engine
// dispatcher (template per channel, the slot held), audience `preferred_route`.
#[tokio::test]
async fn an_unreached_first_choice_falls_back_once_to_the_second_inside_its_slot() {
    let rig = rig(PREFERRED).await;
    let run = rig.engine.trigger("pref", "manual").await.unwrap();
    // Planned at 08:30: nobody's first slot is open yet, so nothing goes.
    rig.step(shanghai(1, 8, 30)).await;
    assert!(rig.sms.sent.lock().unwrap().is_empty());
    assert!(rig.key(run, 3, Choice::Second).await.is_none());
    // The window runs from the first slot's opening, when the first message may go.
    let w = rig.store.wave_runs(run).await.unwrap()[0].clone();
    assert_eq!(w.closes_at, Some(shanghai(3, 9, 0)));
    rig.step(shanghai(1, 10, 0)).await;
    // 0-2 by SMS now (in their 09:00-12:00 slot); 3's e-mail had no address: failed, so
    // its fallback by SMS is written and waits for 18:00; 4 is left out.
    let sent_sms: Vec<i64> = rig.sms.sent.lock().unwrap().iter().map(|s| s.0).collect();
    assert_eq!(sent_sms, rig.subs[0..3].to_vec());
    assert!(rig.email.sent.lock().unwrap().is_empty());
    assert!(rig.key(run, 4, Choice::First).await.is_none());
    assert!(rig.key(run, 3, Choice::Second).await.is_some());

    // 0: undelivered. 1: delivered. 2: replies, then undelivered.
    let t = shanghai(1, 10, 5);
    let mut k = Vec::new();
    for i in 0..3 {
        k.push(rig.key(run, i, Choice::First).await.unwrap());
    }
    let reply = NewInbound {
        source: source::MO,
        idem_key: None,
        msisdn: Some("13800000002".into()),
        kind: "reply".into(),
        value: Some("YES".into()),
        payload: "{}".into(),
        received_at: t,
    };
    rig.store
        .insert_inbound(&[dlr(&k[0], "16", t), dlr(&k[1], "1", t), reply])
        .await
        .unwrap();
    rig.step(t + MINUTE).await;
    rig.store
        .insert_inbound(&[dlr(&k[2], "16", t + 2 * MINUTE)])
        .await
        .unwrap();
    rig.step(t + 3 * MINUTE).await;
    assert!(rig.key(run, 0, Choice::Second).await.is_some());
    assert!(rig.key(run, 1, Choice::Second).await.is_none(), "reached");
    assert!(rig.key(run, 2, Choice::Second).await.is_none(), "responded");
    // Nothing goes before the second slot opens.
    rig.step(shanghai(1, 17, 0)).await;
    assert!(rig.email.sent.lock().unwrap().is_empty());
    assert_eq!(rig.sms.sent.lock().unwrap().len(), 3);

    // The same undelivered report again (the gateway repeating it, or read again after a
    // crash): still one fallback.
    rig.store
        .insert_inbound(&[dlr(&k[0], "16", shanghai(1, 17, 1))])
        .await
        .unwrap();
    rig.step(shanghai(1, 18, 0)).await;
    rig.step(shanghai(1, 18, 1)).await;
    let mail = rig.email.sent.lock().unwrap().clone();
    assert_eq!(mail.len(), 1, "{mail:?}");
    let (sub, key, at) = &mail[0];
    assert_eq!(*sub, rig.subs[0]);
    assert_eq!(Some(key.clone()), rig.key(run, 0, Choice::Second).await);
    assert_eq!(local_hour(*at), 18, "inside the second slot");
    // Rendered from the wave's e-mail template, subject line and all.
    assert_eq!(
        rig.email.subjects.lock().unwrap().clone(),
        [Some("An offer".to_owned())]
    );
    let sms = rig.sms.sent.lock().unwrap().clone();
    assert_eq!(sms.len(), 4, "{sms:?}");
    assert_eq!(sms[3].0, rig.subs[3]);
    assert_eq!(local_hour(sms[3].2), 18);
    // Their story tells both contacts: the SMS as first choice, the e-mail as the second.
    let told: Vec<(String, Choice)> = rig
        .store
        .subscriber_story(rig.subs[0], Some("pref"))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|s| match s.step {
            store::story::Step::Contact {
                channel, choice, ..
            } => Some((channel, choice)),
            _ => None,
        })
        .collect();
    assert_eq!(
        told,
        [
            ("sms".to_owned(), Choice::First),
            ("email".to_owned(), Choice::Second)
        ]
    );

    // 0 orders after the fallback: the wave is answered once, on the contact that reached
    // them (the e-mail), not on the undelivered SMS as well.
    rig.store
        .insert_inbound(&[NewInbound {
            source: source::EVENT,
            idem_key: None,
            msisdn: Some("13800000000".into()),
            kind: "order".into(),
            value: Some("bundle".into()),
            payload: "{}".into(),
            received_at: shanghai(1, 19, 0),
        }])
        .await
        .unwrap();
    rig.step(shanghai(1, 19, 1)).await;

    // The report: reach per channel and choice; the wave counts subscribers.
    rig.step(shanghai(3, 10, 1)).await;
    let json = rig
        .store
        .run_report(run)
        .await
        .unwrap()
        .expect("the run's report");
    let report: evaluate::Report = serde_json::from_str(&json).unwrap();
    let rows: Vec<(String, String, u64, u64, u64)> = report
        .reach
        .iter()
        .map(|r| {
            (
                r.channel.clone(),
                r.choice.clone(),
                r.contacts,
                r.reached,
                r.responded,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("email".into(), "first".into(), 1, 0, 0),
            ("email".into(), "second".into(), 1, 1, 1),
            ("sms".into(), "first".into(), 3, 1, 1),
            ("sms".into(), "second".into(), 1, 1, 0),
        ]
    );
    assert_eq!(report.waves[0].targeted, 4);
    assert_eq!(report.waves[0].responded, 2);
}

// engine dispatcher: the slot gives way to the send-by deadline. With `send_within: 2h` the
// first SMS (due 09:00) must go by 11:00, and so must its fallback: the e-mail slot opens
// at 18:00, too late, so the fallback goes at once instead of expiring unsent.
#[tokio::test]
async fn a_fallback_whose_slot_opens_after_the_deadline_goes_at_once() {
    let rig = rig(&PREFERRED.replace("send_within: 1d", "send_within: 2h")).await;
    let run = rig.engine.trigger("pref", "manual").await.unwrap();
    rig.step(shanghai(1, 8, 30)).await;
    rig.step(shanghai(1, 9, 0)).await;
    let first = rig.key(run, 0, Choice::First).await.unwrap();
    let t = shanghai(1, 10, 0);
    rig.store
        .insert_inbound(&[dlr(&first, "16", t)])
        .await
        .unwrap();
    rig.step(t + MINUTE).await;
    let mail = rig.email.sent.lock().unwrap().clone();
    let to_0: Vec<_> = mail.iter().filter(|m| m.0 == rig.subs[0]).collect();
    assert_eq!(to_0.len(), 1, "{mail:?}");
    assert_eq!(
        to_0[0].2,
        t + MINUTE,
        "sent at once, before the 11:00 deadline"
    );
    assert_eq!(
        Some(to_0[0].1.clone()),
        rig.key(run, 0, Choice::Second).await
    );
}

/// The shipped catalogue and three attributes of its own holding the preference: what an
/// operator whose catalogue names it otherwise declares.
fn renamed_catalogue() -> String {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/attributes.yaml"),
    )
    .unwrap();
    let own = "attributes:\n  - name: pref_one\n    type: enum\n    values: [sms, email, outbound_call, service]\n  - name: pref_two\n    type: enum\n    values: [sms, email, outbound_call, service]\n  - name: pref_two_slot\n    type: text\n    format: time_slot\n";
    let out = shipped.replacen("attributes:\n", own, 1);
    assert_ne!(out, shipped);
    out
}

// audience planner (`wf.preference.attributes()`), store `text_attributes` (a slot not
// read), spec `preference`.
#[tokio::test]
async fn a_campaigns_preference_block_routes_by_its_own_attributes() {
    // No first slot: the first choice goes at any time quiet hours allow.
    let workflow = PREFERRED.to_owned()
        + "preference: { first: pref_one, second: pref_two, second_slot: pref_two_slot }\n";
    // Both keep the shipped attributes of `store::testing::subscriber` (SMS 18:00-21:00,
    // then a call), which this campaign does not read.
    let rig = rig_with(&workflow, Some(&renamed_catalogue()), |base| {
        vec![
            // 0: e-mail first (no address, so it fails), then SMS 18:00-21:00.
            base(0)
                .with("pref_one", "email")
                .with("pref_two", "sms")
                .with("pref_two_slot", "18:00-21:00"),
            // 1: SMS first, then e-mail.
            base(1)
                .with("pref_one", "sms")
                .with("pref_two", "email")
                .with("pref_two_slot", "18:00-21:00")
                .with("email", "s1@example.com"),
        ]
    })
    .await;
    let run = rig.engine.trigger("pref", "manual").await.unwrap();
    rig.step(shanghai(1, 8, 30)).await;
    // 1's SMS at once (no first slot to wait for); 0's e-mail failed for want of an
    // address, and its fallback by SMS waits for the second slot.
    let sms: Vec<(i64, Millis)> = rig
        .sms
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.0, s.2))
        .collect();
    assert_eq!(sms, [(rig.subs[1], shanghai(1, 8, 30))]);
    assert!(rig.email.sent.lock().unwrap().is_empty());
    assert!(rig.key(run, 0, Choice::Second).await.is_some());
    assert!(rig.key(run, 1, Choice::Second).await.is_none());
    rig.step(shanghai(1, 17, 59)).await;
    assert_eq!(rig.sms.sent.lock().unwrap().len(), 1);
    rig.step(shanghai(1, 18, 0)).await;
    let sms: Vec<(i64, Millis)> = rig
        .sms
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.0, s.2))
        .collect();
    assert_eq!(
        sms,
        [
            (rig.subs[1], shanghai(1, 8, 30)),
            (rig.subs[0], shanghai(1, 18, 0))
        ]
    );
    let fallback_key = rig.sms.sent.lock().unwrap()[1].1.clone();
    assert_eq!(Some(fallback_key), rig.key(run, 0, Choice::Second).await);
}

const PREFERRED_VARIANTS: &str = r#"
campaign: pref
timezone: Asia/Shanghai
audience:
  where: "student_stage == 'freshman'"
waves:
  - id: offer
    channel: preferred
    variants:
      - { name: short, weight: 1, templates: { sms: short.txt, email: short_mail.txt } }
      - { name: long, weight: 1, templates: { sms: long.txt, email: long_mail.txt } }
    respond_within: 2d
    send_within: 1d
    responses:
      - reply: "*"
      - event: { type: order, value: bundle }
"#;

// spec `Wave::template_on` (a variant's message per channel), engine dispatcher (renders
// the contact's variant on its channel), store `write_fallbacks` (the fallback keeps the
// variant), `variant_contacts` (one row per subscriber, answered by either contact).
#[tokio::test]
async fn a_preferred_waves_variant_is_drawn_once_and_kept_on_the_fallback() {
    const N: usize = 8;
    let rig = rig_with(PREFERRED_VARIANTS, None, |base| {
        (0..N)
            .map(|i| {
                base(i)
                    .with("first_channel", "sms")
                    .with("first_channel_slot", "09:00-12:00")
                    .with("second_channel", "email")
                    .with("second_channel_slot", "18:00-21:00")
                    .with("email", format!("s{i}@example.com"))
            })
            .collect()
    })
    .await;
    let run = rig.engine.trigger("pref", "manual").await.unwrap();
    rig.step(shanghai(1, 8, 30)).await;
    rig.step(shanghai(1, 10, 0)).await;
    assert_eq!(rig.sms.sent.lock().unwrap().len(), N);
    // Every first SMS but the last undelivered: each falls back to its e-mail at 18:00.
    let t = shanghai(1, 10, 5);
    let mut reports = Vec::new();
    for i in 0..N {
        let k = rig.key(run, i, Choice::First).await.unwrap();
        reports.push(dlr(&k, if i + 1 < N { "16" } else { "1" }, t));
    }
    rig.store.insert_inbound(&reports).await.unwrap();
    rig.step(t + MINUTE).await;
    rig.step(shanghai(1, 18, 0)).await;
    assert_eq!(rig.email.sent.lock().unwrap().len(), N - 1);

    let variant_of = |i: usize| {
        let story = rig.store.subscriber_story(rig.subs[i], Some("pref"));
        async move {
            story
                .await
                .unwrap()
                .into_iter()
                .filter_map(|s| match s.step {
                    store::story::Step::Contact {
                        channel,
                        choice,
                        variant,
                        ..
                    } => Some((channel, choice, variant)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        }
    };
    let mut drawn = Vec::new();
    for i in 0..N {
        let told = variant_of(i).await;
        let v = told[0]
            .2
            .clone()
            .expect("a treatment contact has its variant");
        // The fallback keeps the subscriber's variant.
        let mut want = vec![("sms".to_owned(), Choice::First, Some(v.clone()))];
        if i + 1 < N {
            want.push(("email".to_owned(), Choice::Second, Some(v.clone())));
        }
        assert_eq!(told, want, "subscriber {i}");
        // Each contact rendered from its variant's message on its channel.
        let (sms_text, mail_subject, mail_text) = match v.as_str() {
            "short" => ("Short offer for Test", "Short", "Short offer for Test"),
            "long" => ("A longer offer for Test", "Long", "A longer offer for Test"),
            other => panic!("unknown variant {other}"),
        };
        let sms: Vec<_> = rig
            .sms
            .texts
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.0 == rig.subs[i])
            .cloned()
            .collect();
        assert_eq!(sms, [(rig.subs[i], None, sms_text.to_owned())]);
        let mail: Vec<_> = rig
            .email
            .texts
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.0 == rig.subs[i])
            .cloned()
            .collect();
        let want: Vec<_> = (i + 1 < N)
            .then(|| {
                (
                    rig.subs[i],
                    Some(mail_subject.to_owned()),
                    mail_text.to_owned(),
                )
            })
            .into_iter()
            .collect();
        assert_eq!(mail, want);
        drawn.push(v);
    }
    assert!(
        drawn.iter().any(|v| v == "short") && drawn.iter().any(|v| v == "long"),
        "both arms drawn: {drawn:?}"
    );

    // Subscriber 0 orders after its fallback: their variant's row counts it, once.
    rig.store
        .insert_inbound(&[NewInbound {
            source: source::EVENT,
            idem_key: None,
            msisdn: Some("13800000000".into()),
            kind: "order".into(),
            value: Some("bundle".into()),
            payload: "{}".into(),
            received_at: shanghai(1, 19, 0),
        }])
        .await
        .unwrap();
    rig.step(shanghai(1, 19, 1)).await;
    rig.step(shanghai(3, 10, 1)).await;
    let json = rig
        .store
        .run_report(run)
        .await
        .unwrap()
        .expect("the run's report");
    let report: evaluate::Report = serde_json::from_str(&json).unwrap();
    let rows: Vec<(String, u64, u64)> = report
        .variants
        .iter()
        .map(|r| (r.variant.clone(), r.outcome.treatment.n, r.responded))
        .collect();
    let count = |name: &str| drawn.iter().filter(|v| *v == name).count() as u64;
    let answered = |name: &str| u64::from(drawn[0] == name);
    assert_eq!(
        rows,
        [
            ("short".to_owned(), count("short"), answered("short")),
            ("long".to_owned(), count("long"), answered("long")),
        ],
        "a row per variant, counting subscribers (not their two contacts)"
    );
}

const PREFERRED_TASKS: &str = r#"
campaign: pref
timezone: Asia/Shanghai
audience:
  where: "student_stage == 'freshman'"
waves:
  - id: offer
    channel: preferred
    templates: { sms: offer.txt, service: visit.txt, outbound_call: call.txt }
    team: callcentre
    service_team: desk
    sla: 8h
    respond_within: 2d
    send_within: 4h
"#;

// spec `Wave::team_on` through the dispatcher (a service task on `service_team`'s
// worklist, a call on `team`'s), store `open_tasks` (a first-choice service task expires at
// its send-by, due by then), `expire_tasks` → `write_fallbacks` (`FALLBACK_DEADLINE`: the
// fallback may go until the window's close).
#[tokio::test]
async fn a_first_choice_service_task_nobody_worked_falls_back_to_the_second_choice() {
    use store::inbound::TaskState;
    let rig = rig_with(PREFERRED_TASKS, None, |base| {
        let then_sms = |i: usize, first: &str| {
            base(i)
                .with("first_channel", first)
                .with("first_channel_slot", "09:00-12:00")
                .with("second_channel", "sms")
                .with("second_channel_slot", "18:00-21:00")
        };
        vec![then_sms(0, "service"), then_sms(1, "outbound_call")]
    })
    .await;
    let run = rig.engine.trigger("pref", "manual").await.unwrap();
    rig.step(shanghai(1, 8, 30)).await;
    rig.step(shanghai(1, 9, 30)).await;
    let store = rig.store.clone();
    let open = |team: &'static str| {
        let store = store.clone();
        async move { store.tasks(Some(team), TaskState::Open, 10).await.unwrap() }
    };
    let desk = open("desk").await;
    assert_eq!(desk.len(), 1, "{desk:?}");
    assert_eq!(
        (desk[0].subscriber_id, desk[0].kind.as_str()),
        (rig.subs[0], "service")
    );
    let calls = open("callcentre").await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        (calls[0].subscriber_id, calls[0].kind.as_str()),
        (rig.subs[1], "outbound_call")
    );
    // Due by its send-by (before the 8h SLA), when it expires: long before the close.
    let closes = rig.store.wave_runs(run).await.unwrap()[0]
        .closes_at
        .unwrap();
    let deadline = desk[0].deadline.expect("a first choice's deadline");
    assert!(
        deadline < closes && deadline <= shanghai(1, 13, 30),
        "{deadline}"
    );
    assert_eq!(desk[0].due_at, Some(deadline));
    assert!(rig.key(run, 0, Choice::Second).await.is_none());

    // Nobody worked it: at its deadline it expires, and the SMS waits for the 18:00 slot.
    rig.step(deadline - MINUTE).await;
    assert!(rig.key(run, 0, Choice::Second).await.is_none());
    rig.step(deadline).await;
    assert!(open("desk").await.is_empty());
    let second = rig.key(run, 0, Choice::Second).await.expect("fallback");
    assert!(rig.sms.sent.lock().unwrap().is_empty());
    rig.step(shanghai(1, 18, 0)).await;
    let sent = rig.sms.sent.lock().unwrap().clone();
    let to_0: Vec<_> = sent.iter().filter(|m| m.0 == rig.subs[0]).collect();
    assert_eq!(to_0.len(), 1, "{sent:?}");
    assert_eq!(to_0[0].1, second);
}
